"""The ``env`` resolver: secrets from the worker's environment (the default, as before)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from ferryman.secret_resolvers.base import SecretResolver


class EnvironmentResolver(SecretResolver):
    """Values of the variables of the same names in ``environ`` (default:
    the worker's ``os.environ``, read at each lookup). An empty variable
    counts as set."""

    kind = "env"

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = environ

    def lookup(self, names: Sequence[str]) -> dict[str, str]:
        env = os.environ if self._environ is None else self._environ
        return {n: env[n] for n in names if n in env}

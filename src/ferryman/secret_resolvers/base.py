"""The base of the secret resolvers, and the chain of them a worker uses.

A resolver implements ``lookup(names)``: the values of those of ``names``
it holds (the others left out), or ``SecretSourceFailed`` when it cannot
tell (its source is unreachable or unreadable). Callers use ``resolve``,
which refuses names that are not secret names (``FERRYMAN_*`` above all)
before any lookup and raises ``SecretsMissing`` for names no source holds.

Errors name secrets and sources, never values. The standard library only:
``ferryman.testing``'s fake imports this module.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from typing import ClassVar

from ferryman.domain.secret_names import secret_name_problem


class SecretsError(Exception):
    """A step's secrets could not be resolved (the attempt fails, saying why)."""


class SecretNameRefused(SecretsError):
    """A name that may not name a secret (``FERRYMAN_*``, or not a variable name)."""


class SecretsMissing(SecretsError):
    """No source holds some of the names asked for."""

    def __init__(self, names: Sequence[str], tried: Sequence[str]) -> None:
        self.names = tuple(names)
        self.tried = tuple(tried)
        where = ", ".join(tried) or "no resolver configured"
        super().__init__(
            f"secret(s) not found: {', '.join(self.names)} (looked in: {where}; "
            "see FERRYMAN_SECRETS_RESOLVERS)"
        )


class SecretSourceFailed(SecretsError):
    """A source could not be read (unreachable, refused, unreadable): no value
    is taken from a later source instead, which could be a stale one."""


class SecretResolver(ABC):
    """Where secret values come from. Subclasses set ``kind`` and implement ``lookup``."""

    #: The resolver's name in ``FERRYMAN_SECRETS_RESOLVERS``.
    kind: ClassVar[str] = ""

    @abstractmethod
    def lookup(self, names: Sequence[str]) -> dict[str, str]:
        """The values of those of ``names`` this source holds (valid names
        only, each once); ``SecretSourceFailed`` when the source cannot tell."""

    def describe(self) -> str:
        """How errors name this source (``kind`` plus where it looks)."""
        return self.kind

    def resolve(self, names: Iterable[str]) -> dict[str, str]:
        """Every one of ``names`` with its value: ``SecretNameRefused`` for a
        name that is not a secret name, ``SecretsMissing`` for ones no source holds."""
        wanted = list(dict.fromkeys(names))
        problems = [p for p in map(secret_name_problem, wanted) if p is not None]
        if problems:
            raise SecretNameRefused("; ".join(problems))
        if not wanted:
            return {}
        found = self.lookup(wanted)
        missing = [n for n in wanted if n not in found]
        if missing:
            raise SecretsMissing(missing, self.sources())
        return {n: found[n] for n in wanted}

    def sources(self) -> list[str]:
        """The sources this resolver looks in (for error messages)."""
        return [self.describe()]

    def close(self) -> None:
        """Release what the resolver holds (connections); the default holds nothing."""
        return None


class SecretChain(SecretResolver):
    """Several resolvers in order: each name's value comes from the first
    that holds it. A source that fails stops the lookup (``SecretSourceFailed``
    naming it), rather than falling through to a later one."""

    kind = "chain"

    def __init__(self, resolvers: Sequence[SecretResolver]) -> None:
        self.resolvers = tuple(resolvers)

    def lookup(self, names: Sequence[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        remaining = list(names)
        for r in self.resolvers:
            if not remaining:
                break
            try:
                found = r.lookup(remaining)
            except SecretSourceFailed:
                raise
            except Exception as exc:  # a bug or an unexpected error of a source
                raise SecretSourceFailed(
                    f"secret resolver {r.describe()} failed: {type(exc).__name__}"
                ) from None
            for n in remaining:
                if n in found:
                    out[n] = found[n]
            remaining = [n for n in remaining if n not in out]
        return out

    def sources(self) -> list[str]:
        return [s for r in self.resolvers for s in r.sources()]

    def close(self) -> None:
        for r in self.resolvers:
            r.close()

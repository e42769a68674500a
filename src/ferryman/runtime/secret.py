"""``Secret``: a secret value that does not show itself, and ``secret(name)``,
how a step asks for one of the secrets it declared.

Printing, logging, formatting or ``repr`` of a ``Secret`` gives
``Secret('CAST_API_KEY', '********')`` or ``********``, never the value; the
value is ``reveal()`` (or ``get_secret_value()``, pydantic's name). Pass the
``Secret`` itself as far as possible (``ferryman.http.api_call(...,
secret=...)`` takes one) and reveal it only where the value is sent.

The standard library only: a step's process imports it.
"""

from __future__ import annotations

import hmac
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

MASKED = "********"
# The secrets of a step running in a thread of the worker (``inline``, the
# fake infrastructure), where per-step environment variables cannot be set.
_THREAD = threading.local()


class Secret:
    """A named secret value with a redacted ``repr``/``str``/``format``."""

    __slots__ = ("_name", "_value")

    def __init__(self, name: str, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("a secret's value is a str")
        self._name = name
        self._value = value

    @property
    def name(self) -> str:
        """The secret's name (not secret)."""
        return self._name

    def reveal(self) -> str:
        """The value. Only where it is used (a header, a connection string)."""
        return self._value

    #: pydantic's ``SecretStr`` spelling of ``reveal``.
    get_secret_value = reveal

    def __repr__(self) -> str:
        return f"Secret({self._name!r}, {MASKED!r})"

    def __str__(self) -> str:
        return MASKED

    def __format__(self, spec: str) -> str:
        return format(MASKED, spec)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        # constant time: a comparison should not tell how much of a value matched
        return self._name == other._name and hmac.compare_digest(
            self._value.encode("utf-8"), other._value.encode("utf-8")
        )

    def __hash__(self) -> int:
        return hash((Secret, self._name))

    def __reduce__(self) -> str | tuple[object, ...]:
        # Never written out by pickle (a multiprocessing queue, a cache).
        raise TypeError("a Secret cannot be pickled")


def secret(name: str) -> Secret:
    """The secret ``name`` the running step declared (``@step(secrets=[name])``).

    The worker resolved it when the attempt started and gave it to the step's
    process as the variable ``name``; ``LookupError`` when it did not (the step
    did not declare it). A step running in a thread of the worker (``inline``)
    gets its secrets here, not in ``os.environ``.
    """
    if name.upper().startswith("FERRYMAN_"):
        raise LookupError(f"{name}: FERRYMAN_* names are ferryman's own, never a step's secret")
    given: Mapping[str, str] | None = getattr(_THREAD, "secrets", None)
    value = given.get(name) if given is not None else os.environ.get(name)
    if value is None:
        raise LookupError(
            f"secret {name} was not given to this step: declare it with "
            f"@step(secrets=[{name!r}]) (or secrets: [{name}] in YAML)"
        )
    return Secret(name, value)


@contextmanager
def step_secrets(values: Mapping[str, str]) -> Iterator[None]:
    """``secret()`` answers from ``values`` in this thread, for the block (a
    step run in a thread of the worker; its environment is the worker's)."""
    before = getattr(_THREAD, "secrets", None)
    _THREAD.secrets = dict(values)
    try:
        yield
    finally:
        _THREAD.secrets = before

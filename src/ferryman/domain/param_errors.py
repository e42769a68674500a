"""What is wrong with a run's parameters: ``ParamError`` (one problem, with its
path) and ``ParamsInvalid`` (every problem, raised at once).

Its own module so that both the type checks (``params``) and the declarative
validators (``validators``) can report them without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ParamError:
    """One problem with the parameters of a run."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" if self.path else self.reason


class ParamsInvalid(ValueError):
    """Raised when parameters fail validation; carries every error."""

    def __init__(self, errors: list[ParamError]) -> None:
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))

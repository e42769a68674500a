"""The exception hierarchy. Interfaces map these to status codes / exit codes."""

from __future__ import annotations

from typing import Any


class FerrymanError(Exception):
    """Base of every error ferryman raises on purpose."""

    code = "error"

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class NotFound(FerrymanError):
    """Something named does not exist (HTTP 404)."""

    code = "not_found"


class Ambiguous(NotFound):
    """A handle (such as a run id prefix) names several things; ``details``
    lists the candidates (HTTP 404, code ``ambiguous``)."""

    code = "ambiguous"


class Conflict(FerrymanError):
    """The request conflicts with the current state, e.g. an illegal move (HTTP 409)."""

    code = "conflict"


class InvalidInput(FerrymanError):
    """Bad input; ``details`` lists every problem (HTTP 422)."""

    code = "invalid"


class TooLarge(FerrymanError):
    """Input past a configured size limit; the message names the limit (HTTP 413)."""

    code = "too_large"

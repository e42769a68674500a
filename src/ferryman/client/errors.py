"""``ApiError``: how every failure of a client call is raised."""

from __future__ import annotations

from typing import Any

import httpx


class ApiError(Exception):
    """A request failed: the API's ``{"error": {code, message, details}}``, or
    ``status`` 0 with code ``connection_error``/``timeout`` when there was no answer."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}" if status else f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details


def error_of(resp: httpx.Response) -> ApiError:
    """The ``ApiError`` of an HTTP error answer (its body must have been read).

    The API answers ``{"error": {...}}``; anything else (a proxy's HTML page,
    say) keeps its status, the reason phrase as code and the start of the text.
    """
    try:
        err = resp.json()["error"]
        return ApiError(
            resp.status_code,
            str(err.get("code") or "error"),
            str(err.get("message") or resp.reason_phrase),
            err.get("details"),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        text = resp.text.strip()[:500]
        code = resp.reason_phrase.lower().replace(" ", "_") or "error"
        return ApiError(resp.status_code, code, text or resp.reason_phrase)


def transport_error(exc: httpx.TransportError) -> ApiError:
    """The ``ApiError`` (status 0) of a request that got no answer."""
    if isinstance(exc, httpx.TimeoutException):
        return ApiError(0, "timeout", f"no answer in time: {exc}")
    return ApiError(0, "connection_error", f"cannot reach the server: {exc}")

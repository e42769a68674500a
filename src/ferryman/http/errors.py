"""What went wrong with a request, said safely: one describer for every client.

Error texts are recorded (``last_error`` of callbacks and deliveries,
delivery attempts) and logged, so they never carry a URL's path, query or
credentials (a webhook URL often holds a token) nor a known secret.

Nothing here imports httpx, aiohttp or slack_sdk: an exception can only be
one of theirs if its library is loaded already, so ``sys.modules`` tells.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import math
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from ferryman.http.base import DestinationRefused, public_peer
from ferryman.redaction import Redactor

RESPONSE_EXCERPT = 500  # characters of a receiver's answer kept per attempt
# Statuses whose Retry-After is honoured.
RETRY_AFTER_STATUSES = frozenset({429, 503})
# Slack API errors that no retry can fix.
SLACK_PERMANENT = frozenset(
    {
        "account_inactive",
        "channel_not_found",
        "invalid_arguments",
        "invalid_auth",
        "is_archived",
        "missing_scope",
        "msg_too_long",
        "no_permission",
        "no_text",
        "not_authed",
        "not_in_channel",
        "restricted_action",
        "token_revoked",
    }
)
_MAX_ERROR = 300
# scheme://authority, then whatever follows up to a space or a quote
_URL = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*)://([^\s/?#'\"<>]*)([^\s'\"<>]*)")


class Failure(NamedTuple):
    """A failed request: what to record, and whether a later attempt may succeed."""

    error: str
    retryable: bool = True
    status: int | None = None
    retry_after: float | None = None  # seconds the receiver asked us to wait


def describe(
    what: BaseException | int,
    *,
    timeout: float | None = None,
    headers: Mapping[str, str] | None = None,
    secrets: Iterable[str] = (),
) -> Failure:
    """A short, safe description of a failed request, and whether retrying can help.

    ``what`` is an exception raised by a client of this package (httpx,
    aiohttp, slack_sdk, the destination policy) or a non-2xx HTTP status
    (with the answer's ``headers``, for ``Retry-After`` on 429 and 503).
    ``timeout`` is named in the text of a timeout; ``secrets`` (a token the
    client was given) are masked wherever an exception's message shows them.

    Every status is retryable: a receiver answering 404 or 401 while it is
    being deployed or its secret rotated may answer 200 later, and attempts
    are bounded anyway. Callers may treat a status specially (the deliverer
    disables a subscription on 410).
    """
    if isinstance(what, int):
        after = None
        if what in RETRY_AFTER_STATUSES and headers is not None:
            after = retry_after(_header(headers, "retry-after"))
        return Failure(f"HTTP {what}", True, what, after)
    return _describe_exception(what, timeout, tuple(secrets))


def _describe_exception(
    exc: BaseException, timeout: float | None, secrets: tuple[str, ...]
) -> Failure:
    refused = _refusal(exc)
    if refused is not None:
        return Failure(f"destination refused: {redact(refused.reason, secrets)}", False)
    name = type(exc).__name__
    httpx: Any = sys.modules.get("httpx")
    aiohttp: Any = sys.modules.get("aiohttp")
    slack: Any = sys.modules.get("slack_sdk.errors")
    if slack is not None and isinstance(exc, slack.SlackApiError):
        return _slack_failure(exc)
    if isinstance(exc, TimeoutError) or (
        httpx is not None and isinstance(exc, httpx.TimeoutException)
    ):
        text = "timed out" if timeout is None else f"timed out after {timeout:g}s"
        return Failure(text if name == "TimeoutError" else f"{text} ({name})")
    if (httpx is not None and isinstance(exc, httpx.InvalidURL | httpx.UnsupportedProtocol)) or (
        aiohttp is not None and isinstance(exc, aiohttp.InvalidURL)
    ):
        # Not its message: that is often the URL itself, too broken to redact.
        return Failure(f"invalid URL ({name})", False)
    if aiohttp is not None and isinstance(exc, aiohttp.ClientConnectorError):
        return Failure(f"{name}: cannot connect to {exc.host}:{exc.port} ({exc.os_error})")
    # httpx appends " for url '…'" to some messages; redact() would cut it anyway
    detail = redact(str(exc).split(" for url ")[0], secrets)
    return Failure(f"{name}: {detail}"[:_MAX_ERROR] if detail else name)


def _refusal(exc: BaseException) -> DestinationRefused | None:
    """The policy's refusal, also when a client wrapped it in one of its errors."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return None
        if isinstance(seen, DestinationRefused):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _slack_failure(exc: Any) -> Failure:
    """A Slack Web API error answer: its error code, status and Retry-After."""
    response = getattr(exc, "response", None)
    try:
        code = str(response["error"])  # type: ignore[index]
    except Exception:
        code = "unknown error"
    status = getattr(response, "status_code", None)
    after = None
    if status in RETRY_AFTER_STATUSES:
        after = retry_after(_header(getattr(response, "headers", None) or {}, "retry-after"))
    return Failure(code, code not in SLACK_PERMANENT, status, after)


def _header(headers: Mapping[str, Any], name: str) -> str | None:
    """A header's value whatever the case of its name (httpx and aiohttp headers
    are case-insensitive already; slack_sdk's are a plain dict)."""
    value = headers.get(name)
    if value is None:
        for k, v in headers.items():
            if str(k).lower() == name:
                value = v
                break
    if isinstance(value, list):
        value = value[0] if value else None
    return None if value is None else str(value)


def retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds: delay-seconds or an HTTP date; None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        secs = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        secs = (when - dt.datetime.now(dt.UTC)).total_seconds()
    if not math.isfinite(secs):
        return None
    return max(secs, 0.0)


def redact_url(url: str) -> str:
    """``scheme://host[:port]``, plus ``/…`` when the URL had more: its path,
    query, fragment and credentials are dropped (they may hold a token)."""
    m = _URL.match(url.strip())
    if m is None:
        return "(not a URL)"
    return _origin(m)


def _origin(m: re.Match[str]) -> str:
    scheme, authority, rest = m.group(1), m.group(2), m.group(3)
    host = authority.rpartition("@")[2]
    more = rest or "@" in authority
    return f"{scheme}://{host}/…" if more else f"{scheme}://{host}"


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every URL in it cut to its origin, and ``secrets`` and
    token shapes masked (``ferryman.redaction``)."""
    if "://" in text:
        text = _URL.sub(_origin, text)
    # The one redactor: the secrets in any form, and well-known token shapes.
    return Redactor.of(secrets).text(text)


def answer_shown(status: int, peer: str | None) -> bool:
    """Whether a receiver's answer may be read and kept (stored, shown).

    Only a 2xx answer, or any answer from a public address: an error page of
    a service on an internal network that the destination policy lets
    through (development, ``FERRYMAN_OUTBOUND_ALLOW_NETWORKS``) must not be
    read back through ferryman (a server-side request forgery channel), so
    only its status is kept. ``peer`` is the address the answer came from
    (None when unknown: not public). The one rule for every sender
    (callbacks, deliveries, test sends).
    """
    return 200 <= status < 300 or public_peer(peer)


def response_excerpt(text: str | bytes | None, limit: int = RESPONSE_EXCERPT) -> str | None:
    """The start of a receiver's answer, whitespace collapsed (None when empty)."""
    if not text:
        return None
    if isinstance(text, bytes):
        text = text[: limit * 4].decode("utf-8", "replace")
    return " ".join(text[: limit * 2].split())[:limit] or None

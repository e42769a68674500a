"""Outbound HTTP: every request ferryman sends goes through a client made here.

Three clients, one set of defaults:

- ``ferryman.http.sync.sync_client`` (httpx): run-completion webhooks (the
  callback sender) and subscription test sends;
- ``ferryman.http.aio.async_client`` / ``ClientPool`` (aiohttp): event
  deliveries (the event deliverer; why aiohttp: decision 0005);
- ``ferryman.http.slack.slack_client`` (slack_sdk): Slack messages.

And for steps, ``ferryman.http.api_call`` (``api_calls``): one request to an
API with mandatory timeouts, safe retries and masked logs (httpx, stamina);
``api_call_async`` is its twin for asyncio (aiohttp; ``api_calls_aio``).

Each is in its own submodule, imported on first use, so importing this
package (or ferryman) never imports httpx, aiohttp or slack_sdk.

The defaults: timeouts from the caller's settings (``Timeouts``); no
redirects followed unless asked; nothing taken from the environment
(``trust_env=False``: no proxy surprises; Slack excepted, see its module);
the ``ferryman/<version>`` user agent; the destination policy
(``DestinationPolicy``, from ``destination_policy(settings)``) asked before
every request and, where the client resolves names itself, for the
addresses; URLs reduced to their origin in error texts and in httpx's log
records. One describer (``describe``) turns any failure of these clients,
or a non-2xx status, into a safe short text and whether retrying can help;
one parser reads ``Retry-After``; one rule (``answer_shown``) says when a
receiver's answer may be kept: a 2xx one, or one from a public address.
"""

from ferryman.http.api_calls import ApiCallFailed, ApiResponse, api_call
from ferryman.http.base import (
    PERMISSIVE,
    USER_AGENT,
    DestinationPolicy,
    DestinationRefused,
    Timeouts,
    destination_policy,
    ip_literal,
    public_peer,
)
from ferryman.http.errors import (
    RESPONSE_EXCERPT,
    Failure,
    answer_shown,
    describe,
    redact,
    redact_url,
    response_excerpt,
    retry_after,
)


async def api_call_async(method: str, url: str, **options: object) -> ApiResponse:
    """``api_call`` for asyncio (imports aiohttp on first call)."""
    from ferryman.http.api_calls_aio import api_call_async as call

    return await call(method, url, **options)  # type: ignore[arg-type]


__all__ = [
    "PERMISSIVE",
    "RESPONSE_EXCERPT",
    "USER_AGENT",
    "ApiCallFailed",
    "ApiResponse",
    "DestinationPolicy",
    "DestinationRefused",
    "Failure",
    "Timeouts",
    "answer_shown",
    "api_call",
    "api_call_async",
    "describe",
    "destination_policy",
    "ip_literal",
    "public_peer",
    "redact",
    "redact_url",
    "response_excerpt",
    "retry_after",
]

"""Posting one delivery: render it in its subscriber's format, sign it
(Standard Webhooks, the event id as the stable ``webhook-id``) and POST it.

aiohttp, one session per subscription (``ferryman.http.pool``): a request
waiting on a slow receiver costs a coroutine, not a thread, and a hanging
subscriber only ever holds its own connections, for at most the delivery
timeout. Why aiohttp rather than httpx here: decision 0005. The answer's
first bytes are kept only when ``ferryman.http.answer_shown`` allows it (a
2xx answer, or one from a public address).
"""

from __future__ import annotations

import asyncio
import logging
import time

from ferryman.engine.event_deliverer.queue import Claimed
from ferryman.engine.event_deliverer.results import Result
from ferryman.http import (
    RESPONSE_EXCERPT,
    DestinationPolicy,
    Timeouts,
    answer_shown,
    describe,
    response_excerpt,
)
from ferryman.http.pool import ClientPool
from ferryman.notify.formats import FormatContext
from ferryman.notify.webhook import build_request
from ferryman.store.tables import utcnow

log = logging.getLogger(__name__)


class Poster:
    """Makes delivery attempts (see the module docstring)."""

    def __init__(
        self,
        ctx: FormatContext,
        *,
        timeout: float,
        policy: DestinationPolicy,
        per_subscriber: int,
    ) -> None:
        self.ctx = ctx
        self.timeout = timeout
        self.policy = policy
        self.per_subscriber = per_subscriber

    def clients(self) -> ClientPool:
        """One aiohttp session per subscription (made on first use)."""
        return ClientPool(
            Timeouts.overall(self.timeout),
            policy=self.policy,
            connections=self.per_subscriber,
        )

    async def attempt(self, clients: ClientPool, c: Claimed) -> Result:
        """Post ``c``; never raises (but for cancellation): a failure is a result."""
        from ferryman.http.aio import ERRORS

        started = time.monotonic()
        res = Result(c, utcnow(), 0.0)
        try:
            if c.event is None:
                res.error, res.permanent = "the event no longer exists", True
            else:
                try:
                    body, headers = build_request(
                        secret=c.secret,
                        fmt_name=c.format,
                        extra_headers=c.headers,
                        event=c.event,
                        ctx=self.ctx,
                    )
                except Exception as exc:  # an unknown format, a broken plug-in
                    res.error = f"cannot render the {c.format} format: {type(exc).__name__}: {exc}"
                    res.permanent = True
                else:
                    await self._post(clients, c, body, headers, res)
        except asyncio.CancelledError:
            raise
        except ERRORS as exc:
            failure = describe(exc, timeout=self.timeout)
            res.error, res.permanent = failure.error, not failure.retryable
        except Exception as exc:  # a bug must not lose the delivery: it is retried
            log.exception("delivery %d: attempt %d crashed", c.id, c.attempts)
            res.error = f"internal error: {type(exc).__name__}: {exc}"
        res.latency_ms = round((time.monotonic() - started) * 1000, 2)
        return res

    @staticmethod
    async def _post(
        clients: ClientPool,
        c: Claimed,
        body: bytes,
        headers: dict[str, str],
        res: Result,
    ) -> None:
        from ferryman.http.aio import peer_address

        async with clients.get(c.subscription_id).post(c.url, data=body, headers=headers) as resp:
            res.status = resp.status
            if answer_shown(resp.status, peer_address(resp)):
                res.response = response_excerpt(await resp.content.read(RESPONSE_EXCERPT * 4))
            if not res.ok:
                failure = describe(resp.status, headers=resp.headers)
                res.error, res.retry_after = failure.error, failure.retry_after

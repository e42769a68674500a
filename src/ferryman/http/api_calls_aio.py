"""``api_call_async``: ``api_call``'s twin for a step written with asyncio.

The same request, the same rules (``ferryman.http.api_calls``: mandatory
timeouts, retries only when safe, ``Retry-After``, 4xx permanent, masked
logs), sent with the package's async client (aiohttp). Imported on first use.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from ferryman.http.aio import async_client
from ferryman.http.api_calls import (
    ApiCallFailed,
    ApiResponse,
    Call,
    RetryableFailure,
    default_policy,
    judge_answer,
    judge_exception,
    prepare,
)
from ferryman.http.base import DestinationPolicy, Timeouts


async def api_call_async(
    method: str, url: str, *, policy: DestinationPolicy | None = None, **options: Any
) -> ApiResponse:
    """``await api_call_async("GET", url, secret=key)``: as ``api_call``."""
    call = prepare(method, url, **options)
    call.start()
    count = 0
    client = async_client(
        Timeouts(call.limits.connect, call.limits.read, call.limits.total),
        policy=policy or default_policy(), connections=4,
    )  # fmt: skip
    try:
        async for attempt in call.retry_context():
            with attempt:
                count += 1
                return await _attempt(client, call, count)
    except RetryableFailure as exc:
        exc.failure.attempts = count
        raise exc.failure from None
    except aiohttp.InvalidURL:
        raise ApiCallFailed(f"{call.method} {call.shown}: invalid URL", permanent=True) from None
    finally:
        await client.close()
    raise AssertionError("unreachable")  # pragma: no cover - stamina raises or returns


async def _attempt(client: Any, call: Call, count: int) -> ApiResponse:
    started = time.monotonic()
    try:
        left = max(call.deadline - time.monotonic(), 0.001)
        async with asyncio.timeout(left):  # the total bounds this attempt too
            async with client.request(
                call.method, call.url, data=call.body, headers=call.headers, params=call.params
            ) as r:
                data = await r.read()
                status, headers, final = r.status, r.headers, str(r.url)
    except Exception as exc:
        not_sent = isinstance(exc, aiohttp.ClientConnectorError)
        raise judge_exception(exc, not_sent, call, count, started) from None
    return judge_answer(call, status, headers, data, time.monotonic() - started, count, final)

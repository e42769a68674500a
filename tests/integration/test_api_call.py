"""``ferryman.http.api_call`` against a real HTTP server on loopback."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable

import pytest
import stamina
from tests.webhook_support import Receiver, always, receivers, sequence

from ferryman import Secret
from ferryman.http import ApiCallFailed, Timeouts, api_call, api_call_async

__all__ = ["receivers"]

KEY = "cast-key-7f3a9c2e1b"
SECRET = Secret("CAST_API_KEY", KEY)
Make = Callable[..., Receiver]


def url(r: Receiver, path: str = "/v1/casts") -> str:
    return f"http://127.0.0.1:{r.port}{path}"


def test_success_sends_body_and_secret_and_logs_no_secret(
    receivers: Make, caplog: pytest.LogCaptureFixture
) -> None:
    r = receivers(always(200, b'{"ok": true}'))
    with caplog.at_level(logging.DEBUG):
        got = api_call("POST", url(r) + "?q=1", json={"id": 42}, secret=SECRET)
    assert got.status == 200 and got.json() == {"ok": True} and got.attempts == 1
    req = r.requests[0]
    assert req.method == "POST" and req.json() == {"id": 42}
    assert req.headers["authorization"] == f"Bearer {KEY}"
    assert req.headers["content-type"] == "application/json"
    assert KEY not in caplog.text and '"id"' not in caplog.text and "q=1" not in caplog.text
    assert f"POST http://127.0.0.1:{r.port}/v1/casts -> 200" in caplog.text


def test_secret_in_its_own_header(receivers: Make) -> None:
    r = receivers(always())
    api_call("GET", url(r), secret=KEY, secret_header="X-Api-Key", auth_scheme="")
    assert r.requests[0].headers["x-api-key"] == KEY
    assert "authorization" not in r.requests[0].headers


def test_body_of_delete_is_sent(receivers: Make) -> None:
    r = receivers(always())
    api_call("DELETE", url(r), json={"why": "gone"})
    assert r.requests[0].method == "DELETE" and r.requests[0].json() == {"why": "gone"}


def test_4xx_is_permanent_with_status_and_masked_excerpt(receivers: Make) -> None:
    r = receivers(always(401, f"bad key {KEY} (Authorization: Bearer {KEY})".encode()))
    with pytest.raises(ApiCallFailed) as info:
        api_call("GET", url(r), secret=SECRET)
    e = info.value
    assert e.status == 401 and e.permanent and e.attempts == 1 and len(r.requests) == 1
    assert "HTTP 401" in str(e) and "bad key" in str(e)
    assert KEY not in str(e) and KEY not in (e.excerpt or "")


def test_5xx_retried_for_idempotent_methods(receivers: Make) -> None:
    r = receivers(sequence((503, {}, b"down", 0.0), (502, {}, b"down", 0.0)))
    with stamina.set_testing(True, attempts=4):
        got = api_call("PUT", url(r), json={"a": 1})
    assert got.status == 200 and len(r.requests) == 3
    assert all(q.json() == {"a": 1} for q in r.requests)  # the body on every attempt


def test_post_without_idempotency_key_is_not_retried(receivers: Make) -> None:
    r = receivers(sequence((503, {}, b"down", 0.0)))
    with pytest.raises(ApiCallFailed) as info:
        api_call("POST", url(r), json={"a": 1})
    assert info.value.status == 503 and not info.value.permanent and len(r.requests) == 1


def test_post_with_idempotency_key_is_retried(receivers: Make) -> None:
    r = receivers(sequence((500, {}, b"oops", 0.0)))
    with stamina.set_testing(True, attempts=3):
        got = api_call("POST", url(r), json={"a": 1}, idempotency_key="k-1")
    assert got.status == 200 and len(r.requests) == 2
    assert [q.headers["idempotency-key"] for q in r.requests] == ["k-1", "k-1"]


def test_retry_after_is_honoured(receivers: Make) -> None:
    r = receivers(sequence((429, {"Retry-After": "1"}, b"slow down", 0.0)))
    started = time.monotonic()
    got = api_call("GET", url(r))
    gap = r.requests[1].time - r.requests[0].time
    assert got.status == 200 and got.attempts == 2
    assert gap >= 0.95, gap  # waited what the server asked (stamina would wait ~0.2 s)
    assert time.monotonic() - started < 30


def test_retry_after_longer_than_allowed_fails_at_once(receivers: Make) -> None:
    r = receivers(sequence((503, {"Retry-After": "120"}, b"maintenance", 0.0)))
    started = time.monotonic()
    with pytest.raises(ApiCallFailed) as info:
        api_call("GET", url(r), max_retry_after=5)
    assert info.value.status == 503 and len(r.requests) == 1
    assert time.monotonic() - started < 5


def test_attempts_exhausted_says_how_many(receivers: Make) -> None:
    r = receivers(always(500, b"broken"))
    with stamina.set_testing(True, attempts=3), pytest.raises(ApiCallFailed) as info:
        api_call("GET", url(r))
    assert info.value.attempts == 3 and len(r.requests) == 3 and info.value.status == 500


def test_read_timeout_and_total_timeout(receivers: Make) -> None:
    r = receivers(always())
    r.plan = lambda n: (200, {}, b"late", 5.0)
    started = time.monotonic()
    with pytest.raises(ApiCallFailed, match="timed out"):
        api_call("POST", url(r), timeout=Timeouts(connect=1, read=0.5, total=10))
    assert time.monotonic() - started < 4
    started = time.monotonic()
    with pytest.raises(ApiCallFailed):
        # GET is retried, but the total bounds every attempt and wait together
        api_call("GET", url(r), timeout=Timeouts(connect=1, read=0.8, total=2), attempts=10)
    assert time.monotonic() - started < 6


def test_connection_refused_is_retried_even_for_post() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nothing listens there
    with stamina.set_testing(True, attempts=3), pytest.raises(ApiCallFailed) as info:
        api_call("POST", f"http://127.0.0.1:{port}/x", json={}, secret=SECRET)
    assert info.value.attempts == 3 and info.value.status is None and KEY not in str(info.value)


def test_timeouts_are_mandatory() -> None:
    for bad in (0, -1, None, Timeouts(1, 1)):
        with pytest.raises(ValueError, match="timeout"):
            api_call("GET", "http://127.0.0.1:9/", timeout=bad)  # type: ignore[arg-type]


def test_metadata_services_are_refused() -> None:
    with pytest.raises(ApiCallFailed, match="metadata") as info:
        api_call("GET", "http://169.254.169.254/latest/meta-data/")
    assert info.value.permanent


# -- the asyncio twin: the same rules through aiohttp ---------------------------------


def test_async_success_and_masked_logs(receivers: Make, caplog: pytest.LogCaptureFixture) -> None:
    r = receivers(always(201, b'{"id": 7}'))
    with caplog.at_level(logging.DEBUG):
        got = asyncio.run(api_call_async("PATCH", url(r), json={"a": 1}, secret=SECRET))
    assert got.status == 201 and got.json() == {"id": 7}
    req = r.requests[0]
    assert req.method == "PATCH" and req.json() == {"a": 1}
    assert req.headers["authorization"] == f"Bearer {KEY}"
    assert KEY not in caplog.text and "-> 201" in caplog.text


def test_async_4xx_permanent_and_post_not_retried(receivers: Make) -> None:
    r = receivers(sequence((403, {}, f"no: {KEY}".encode(), 0.0), (503, {}, b"x", 0.0)))
    with pytest.raises(ApiCallFailed) as info:
        asyncio.run(api_call_async("GET", url(r), secret=SECRET))
    assert info.value.status == 403 and info.value.permanent and KEY not in str(info.value)
    with pytest.raises(ApiCallFailed) as info:
        asyncio.run(api_call_async("POST", url(r), json={}))
    assert info.value.status == 503 and len(r.requests) == 2


def test_async_retry_after_and_idempotency_key(receivers: Make) -> None:
    r = receivers(sequence((429, {"Retry-After": "1"}, b"slow", 0.0)))
    got = asyncio.run(api_call_async("POST", url(r), json={"n": 1}, idempotency_key="k"))
    assert got.attempts == 2 and r.requests[1].time - r.requests[0].time >= 0.95
    assert [q.json() for q in r.requests] == [{"n": 1}, {"n": 1}]


def test_async_total_timeout_and_refused_connection(receivers: Make) -> None:
    r = receivers(always())
    r.plan = lambda n: (200, {}, b"late", 5.0)
    started = time.monotonic()
    with pytest.raises(ApiCallFailed, match="timed out"):
        asyncio.run(api_call_async("GET", url(r), timeout=Timeouts(1, 0.5, 1.5), attempts=10))
    assert time.monotonic() - started < 5
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with stamina.set_testing(True, attempts=3), pytest.raises(ApiCallFailed) as info:
        asyncio.run(api_call_async("POST", f"http://127.0.0.1:{port}/", json={}))
    assert info.value.attempts == 3

"""ferryman.http, the one outbound-HTTP module: Retry-After, redaction, the
error describer, and the three clients (httpx, aiohttp, Slack) against real
HTTP receivers on loopback (``tests/webhook_support.py``) or
``httpx.MockTransport``: defaults, timeouts, redirects, and the destination
policy asked before every request of every client kind."""

from __future__ import annotations

import email.utils
import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from slack_sdk.errors import SlackApiError
from tests.webhook_support import Receiver, always, sequence

from ferryman import __version__
from ferryman.http import (
    PERMISSIVE,
    USER_AGENT,
    DestinationPolicy,
    DestinationRefused,
    Timeouts,
    answer_shown,
    describe,
    ip_literal,
    public_peer,
    redact,
    redact_url,
    response_excerpt,
    retry_after,
)
from ferryman.http.aio import _client_timeout, async_client
from ferryman.http.aio import peer_address as aio_peer_address
from ferryman.http.pool import ClientPool
from ferryman.http.slack import slack_client
from ferryman.http.sync import peer_address, read_start, sync_client

TOKEN = "s3cr3t-path-token"  # in every Receiver.url's query string


class Recorder(DestinationPolicy):
    """Records every question; refuses URLs containing ``refuse`` and hosts in
    ``refuse_hosts`` (after resolution)."""

    def __init__(self, refuse: str | None = None, refuse_hosts: Sequence[str] = ()) -> None:
        self.urls: list[str] = []
        self.resolved: list[tuple[str, list[str]]] = []
        self.refuse = refuse
        self.refuse_hosts = set(refuse_hosts)

    def check_url(self, url: str) -> None:
        self.urls.append(url)
        if self.refuse is not None and self.refuse in url:
            raise DestinationRefused(f"{self.refuse} is not allowed")

    def check_addresses(self, host: str, addresses: Sequence[str]) -> None:
        self.resolved.append((host, list(addresses)))
        if host in self.refuse_hosts:
            raise DestinationRefused(f"{host} resolves to {', '.join(addresses)}")


# -- Retry-After ----------------------------------------------------------------------


def _http_date(offset: float) -> str:
    return email.utils.formatdate(time.time() + offset, usegmt=True)


def test_retry_after_seconds_and_dates() -> None:
    assert retry_after("3") == 3.0
    assert retry_after(" 1.5 ") == 1.5
    assert retry_after("0") == 0.0
    assert retry_after("-4") == 0.0  # never negative
    got = retry_after(_http_date(30))
    assert got is not None and 25 <= got <= 31
    assert retry_after(_http_date(-3600)) == 0.0  # a date in the past: now
    naive = time.strftime("%a, %d %b %Y %H:%M:%S", time.gmtime(time.time() + 60))
    got = retry_after(naive)  # no zone: read as UTC
    assert got is not None and 55 <= got <= 61


@pytest.mark.parametrize(
    "value", [None, "", "  ", "soon", "1 minute", "Mon, 99 Foo", "inf", "-inf", "nan", "1e999"]
)
def test_retry_after_garbage_and_infinity_are_ignored(value: str | None) -> None:
    assert retry_after(value) is None


# -- redaction -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "safe"),
    [
        ("https://hooks.example.com/services/T0/B0/XXXX", "https://hooks.example.com/…"),
        ("http://127.0.0.1:8080/hook?token=abc", "http://127.0.0.1:8080/…"),
        ("https://user:pa55@example.com", "https://example.com/…"),
        ("https://user:pa55@example.com:8443/x", "https://example.com:8443/…"),
        ("http://[::1]:9000/p#frag", "http://[::1]:9000/…"),
        ("https://example.com", "https://example.com"),
        ("not a url", "(not a URL)"),
    ],
)
def test_redact_url_keeps_only_the_origin(url: str, safe: str) -> None:
    assert redact_url(url) == safe


def test_redact_text_cuts_every_url_and_masks_secrets() -> None:
    text = (
        "POST 'https://u:p@a.example/x?token=t1' failed, then "
        "URL('http://b.example:81/y/z') and <http://c.example/q?k=v> with xoxb-123"
    )
    out = redact(text, secrets=["xoxb-123", ""])
    assert out == (
        "POST 'https://a.example/…' failed, then "
        "URL('http://b.example:81/…') and <http://c.example/…> with ********"
    )
    for needle in ("t1", "u:p", "/y/z", "k=v", "xoxb"):
        assert needle not in out
    assert redact("no URL here") == "no URL here"


def test_response_excerpt() -> None:
    assert response_excerpt(None) is None
    assert response_excerpt(b"") is None
    assert response_excerpt(b"  \n ") is None
    assert response_excerpt(b"internal  trouble\n") == "internal trouble"
    assert response_excerpt("é" * 1000, 10) == "é" * 10
    assert response_excerpt(b"\xff bad utf-8") == "\ufffd bad utf-8"


def test_an_answer_is_kept_only_when_2xx_or_from_a_public_address() -> None:
    # The one rule of callbacks, deliveries and test sends: an internal
    # service's error page is never read back through ferryman.
    assert answer_shown(200, None) and answer_shown(204, "10.0.0.5")
    assert answer_shown(500, "93.184.216.34") and answer_shown(404, "2606:4700:4700::1111")
    internal = [None, "", "127.0.0.1", "10.1.2.3", "192.168.0.1", "172.16.0.9",
                "169.254.169.254", "100.64.0.1", "::1", "fd00::1", "fe80::1%eth0",
                "::ffff:10.0.0.1", "::ffff:127.0.0.1", "0.0.0.0", "not an address"]  # fmt: skip
    for peer in internal:
        assert not public_peer(peer), peer
        for status in (199, 301, 400, 404, 500, 503):
            assert not answer_shown(status, peer), (status, peer)
    assert public_peer("::ffff:93.184.216.34")


def test_peer_addresses_of_both_clients(receivers: Callable[..., Receiver]) -> None:
    rcv = receivers(always(500, b"internal page"))
    with (
        sync_client(Timeouts.per_phase(5), policy=PERMISSIVE) as client,
        client.stream("POST", rcv.url, content=b"{}") as resp,
    ):
        assert peer_address(resp) == "127.0.0.1"
        assert not answer_shown(resp.status_code, peer_address(resp))

    async def aio() -> str | None:
        client = async_client(Timeouts.overall(5), policy=PERMISSIVE, connections=1)
        try:
            async with client.post(rcv.url, data=b"{}", headers={}) as resp:
                return aio_peer_address(resp)
        finally:
            await client.close()

    import asyncio

    assert asyncio.run(aio()) == "127.0.0.1"


# -- the error describer -----------------------------------------------------------------


def test_describe_statuses() -> None:
    f = describe(500)
    assert (f.error, f.retryable, f.status, f.retry_after) == ("HTTP 500", True, 500, None)
    assert describe(503, headers={"Retry-After": "7"}).retry_after == 7.0  # any case
    assert describe(429, headers=httpx.Headers({"retry-after": "2"})).retry_after == 2.0
    assert describe(500, headers={"retry-after": "7"}).retry_after is None  # only 429/503
    assert describe(503, headers={"retry-after": "whenever"}).retry_after is None
    # every status may heal (a receiver being deployed); 410 is the caller's business
    assert all(describe(s).retryable for s in (400, 401, 404, 410, 502))


def test_describe_httpx_errors() -> None:
    request = httpx.Request("POST", f"https://u:p@example.com/hook?token={TOKEN}")
    f = describe(httpx.ReadTimeout("timed out", request=request), timeout=2.5)
    assert (f.error, f.retryable) == ("timed out after 2.5s (ReadTimeout)", True)
    f = describe(httpx.ConnectError("[Errno 111] Connection refused", request=request))
    assert (f.error, f.retryable) == ("ConnectError: [Errno 111] Connection refused", True)
    f = describe(httpx.UnsupportedProtocol("Request URL has an unsupported protocol 'ftp://'."))
    assert (f.error, f.retryable) == ("invalid URL (UnsupportedProtocol)", False)
    f = describe(httpx.InvalidURL(f"Invalid port in https://example.com:x/{TOKEN}"))
    assert not f.retryable and TOKEN not in f.error
    leaky = httpx.HTTPStatusError(
        f"Server error '500' for url 'https://example.com/hook?token={TOKEN}'",
        request=request,
        response=httpx.Response(500, request=request),
    )
    f = describe(leaky)
    assert TOKEN not in f.error and f.error == "HTTPStatusError: Server error '500'"
    assert describe(httpx.RemoteProtocolError(f"oops at http://h/{TOKEN}")).error == (
        "RemoteProtocolError: oops at http://h/…"
    )


def test_describe_aiohttp_errors() -> None:
    assert describe(TimeoutError(), timeout=3) == ("timed out after 3s", True, None, None)
    f = describe(aiohttp.ConnectionTimeoutError("Connection timeout"), timeout=1)
    assert f.error == "timed out after 1s (ConnectionTimeoutError)" and f.retryable
    f = describe(aiohttp.InvalidURL(f"http://bad host/{TOKEN}"))  # too broken to redact
    assert (f.error, f.retryable) == ("invalid URL (InvalidURL)", False)
    f = describe(aiohttp.ServerDisconnectedError())
    assert f.retryable and f.error.startswith("ServerDisconnectedError")
    leaky = aiohttp.ClientOSError(f"bad answer to xoxb-secret at http://h/{TOKEN}")
    assert describe(leaky, secrets=["xoxb-secret"]).error == (
        "ClientOSError: bad answer to ******** at http://h/…"
    )
    long = aiohttp.ClientPayloadError("x" * 1000)
    assert len(describe(long).error) <= 300


def test_describe_refusals_are_never_retried() -> None:
    f = describe(DestinationRefused("169.254.169.254 is a metadata address"))
    assert f == ("destination refused: 169.254.169.254 is a metadata address", False, None, None)
    try:  # a client that wrapped it in its own error
        try:
            raise DestinationRefused("private address")
        except DestinationRefused as inner:
            raise aiohttp.ClientOSError("wrapped") from inner
    except Exception as exc:
        wrapped = exc
    assert describe(wrapped) == ("destination refused: private address", False, None, None)


def test_describe_slack_errors() -> None:
    class Answer(dict[str, Any]):
        status_code = 429
        headers = {"Retry-After": "4"}  # slack_sdk's headers: a plain dict

    f = describe(SlackApiError("rate limited", Answer(ok=False, error="ratelimited")))
    assert (f.error, f.retryable, f.status, f.retry_after) == ("ratelimited", True, 429, 4.0)
    Answer.status_code = 200
    f = describe(SlackApiError("nope", Answer(ok=False, error="channel_not_found")))
    assert (f.error, f.retryable, f.status) == ("channel_not_found", False, 200)
    assert f.retry_after is None


def test_ip_literal() -> None:
    assert str(ip_literal("127.0.0.1")) == "127.0.0.1"
    assert str(ip_literal("[::1]")) == "::1"
    assert str(ip_literal("fe80::1%eth0")) == "fe80::1"
    assert ip_literal("localhost") is None
    assert ip_literal("example.com") is None


# -- the sync client (httpx) ----------------------------------------------------------------


def test_sync_client_defaults_against_a_receiver(
    receivers: Callable[..., Receiver], monkeypatch: pytest.MonkeyPatch
) -> None:
    # a proxy in the environment is ignored: no proxy surprises
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")
    rcv = receivers(always(202, b"queued"))
    policy = Recorder()
    with sync_client(Timeouts.per_phase(5), policy=policy) as client:
        resp = client.post(rcv.url, content=b"{}")
        assert client.timeout == httpx.Timeout(5)
        assert client.follow_redirects is False
        assert client.trust_env is False
    assert resp.status_code == 202 and resp.text == "queued"
    (req,) = rcv.requests
    assert req.headers["user-agent"] == USER_AGENT == f"ferryman/{__version__}"
    assert policy.urls == [rcv.url]
    assert policy.resolved == []  # an IP-literal host: judged by check_url alone


def test_sync_client_asks_the_policy_for_every_request_and_can_refuse(
    receivers: Callable[..., Receiver],
) -> None:
    rcv = receivers()
    policy = Recorder(refuse="/refused")
    base = f"http://127.0.0.1:{rcv.port}"
    with sync_client(Timeouts.per_phase(5), policy=policy) as client:
        assert client.post(f"{base}/a", content=b"1").status_code == 200
        with pytest.raises(DestinationRefused, match="/refused is not allowed"):
            client.post(f"{base}/refused?x=1", content=b"2")
        assert client.post(f"{base}/b", content=b"3").status_code == 200
    assert policy.urls == [f"{base}/a", f"{base}/refused?x=1", f"{base}/b"]
    assert [r.path for r in rcv.requests] == ["/a", "/b"]  # the refused one never left


def test_sync_client_checks_resolved_addresses(receivers: Callable[..., Receiver]) -> None:
    rcv = receivers()
    url = f"http://localhost:{rcv.port}/hook"
    allow = Recorder()
    with sync_client(Timeouts.per_phase(5), policy=allow) as client:
        assert client.post(url, content=b"{}").status_code == 200
    ((host, addresses),) = allow.resolved
    assert host == "localhost" and "127.0.0.1" in addresses
    refuse = Recorder(refuse_hosts=["localhost"])
    with (
        sync_client(Timeouts.per_phase(5), policy=refuse) as client,
        pytest.raises(DestinationRefused, match="localhost resolves to"),
    ):
        client.post(url, content=b"{}")
    assert len(rcv.requests) == 1  # nothing was sent after the refusal


def test_sync_client_with_a_mock_transport_still_asks_the_policy() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(204)

    policy = Recorder(refuse="evil")
    transport = httpx.MockTransport(handler)
    with sync_client(Timeouts.per_phase(1), policy=policy, transport=transport) as client:
        assert client.post("https://good.example/x").status_code == 204
        with pytest.raises(DestinationRefused):
            client.post("https://evil.example/x")
    assert policy.urls == ["https://good.example/x", "https://evil.example/x"]
    assert seen == ["https://good.example/x"]


def test_sync_client_follows_no_redirect_unless_asked(receivers: Callable[..., Receiver]) -> None:
    rcv = receivers(sequence((307, {"Location": "/moved"}, b"", 0.0)))
    base = f"http://127.0.0.1:{rcv.port}"
    policy = Recorder()
    with sync_client(Timeouts.per_phase(5), policy=policy) as client:
        assert client.post(f"{base}/first", content=b"x").status_code == 307
    assert [r.path for r in rcv.requests] == ["/first"]
    rcv.plan = sequence((307, {"Location": "/moved"}, b"", 0.0))
    rcv.requests.clear()
    policy = Recorder()
    with sync_client(Timeouts.per_phase(5), policy=policy, follow_redirects=True) as client:
        assert client.post(f"{base}/first", content=b"x").status_code == 200
    assert [r.path for r in rcv.requests] == ["/first", "/moved"]
    assert policy.urls == [f"{base}/first", f"{base}/moved"]  # every hop is asked about


def test_sync_client_timeout(receivers: Callable[..., Receiver]) -> None:
    rcv = receivers(always())
    rcv.plan = lambda n: (200, {}, b"late", 5.0)
    started = time.monotonic()
    with (
        sync_client(Timeouts.per_phase(0.3), policy=PERMISSIVE) as client,
        pytest.raises(httpx.ReadTimeout) as info,
    ):
        client.post(rcv.url, content=b"x")
    assert time.monotonic() - started < 2.5
    assert describe(info.value, timeout=0.3).error == "timed out after 0.3s (ReadTimeout)"


def test_read_start_reads_only_the_start(receivers: Callable[..., Receiver]) -> None:
    rcv = receivers(always(500, b"x" * 100_000))
    with (
        sync_client(Timeouts.per_phase(5), policy=PERMISSIVE) as client,
        client.stream("POST", rcv.url, content=b"") as resp,
    ):
        assert len(read_start(resp, 300)) == 300


def test_httpx_log_records_carry_no_path_query_or_credentials(
    receivers: Callable[..., Receiver], caplog: pytest.LogCaptureFixture
) -> None:
    rcv = receivers()
    caplog.set_level(logging.DEBUG)
    with_auth = rcv.url.replace("http://", "http://alice:pa55w0rd@")
    with sync_client(Timeouts.per_phase(5), policy=PERMISSIVE) as client:
        client.post(rcv.url, content=b"{}")
        client.post(with_auth, content=b"{}")
    records = [r for r in caplog.records if r.name.startswith("httpx")]
    assert any("HTTP Request" in r.getMessage() for r in records)  # httpx did log
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert f"http://127.0.0.1:{rcv.port}/…" in text
    for needle in (TOKEN, "/hook", "alice", "pa55w0rd"):
        assert needle not in text


# -- the async client (aiohttp) ------------------------------------------------------------------


def test_async_timeouts_map_onto_aiohttp() -> None:
    t = _client_timeout(Timeouts.overall(10))
    assert (t.total, t.sock_connect, t.sock_read) == (10, None, None)  # no timer per read
    t = _client_timeout(Timeouts(1, 2, 5))
    assert (t.total, t.sock_connect, t.sock_read) == (5, 1, 2)
    t = _client_timeout(Timeouts.per_phase(3))
    assert (t.total, t.sock_connect, t.sock_read) == (None, 3, 3)


async def test_async_client_defaults_policy_and_refusal(
    receivers: Callable[..., Receiver], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    rcv = receivers(always(201, b"made"))
    base = f"http://127.0.0.1:{rcv.port}"
    policy = Recorder(refuse="/refused")
    client = async_client(Timeouts.overall(5), policy=policy, connections=2)
    try:
        async with client.post(rcv.url, data=b"{}", headers={"x-a": "1"}) as resp:
            assert resp.status == 201 and await resp.read() == b"made"
        with pytest.raises(DestinationRefused) as info:
            async with client.post(f"{base}/refused", data=b"{}", headers={}):
                pass
        assert not describe(info.value).retryable
        async with client.post(f"{base}/after", data=b"{}", headers={}) as resp:
            assert resp.status == 201
    finally:
        await client.close()
    assert policy.urls == [rcv.url, f"{base}/refused", f"{base}/after"]
    assert [r.path for r in rcv.requests] == ["/hook?token=s3cr3t-path-token", "/after"]
    assert rcv.requests[0].headers["user-agent"] == USER_AGENT
    assert rcv.requests[0].headers["x-a"] == "1"


async def test_async_client_checks_resolved_addresses(receivers: Callable[..., Receiver]) -> None:
    rcv = receivers()
    url = f"http://localhost:{rcv.port}/hook"
    allow = Recorder()
    client = async_client(Timeouts.overall(5), policy=allow, connections=2)
    try:
        async with client.post(url, data=b"{}", headers={}) as resp:
            assert resp.status == 200
    finally:
        await client.close()
    ((host, addresses),) = allow.resolved
    assert host == "localhost" and "127.0.0.1" in addresses
    refuse = Recorder(refuse_hosts=["localhost"])
    client = async_client(Timeouts.overall(5), policy=refuse, connections=2)
    try:
        with pytest.raises(DestinationRefused) as info:
            async with client.post(url, data=b"{}", headers={}):
                pass
    finally:
        await client.close()
    f = describe(info.value)
    assert f.error.startswith("destination refused: localhost resolves to") and not f.retryable
    assert len(rcv.requests) == 1


async def test_async_client_follows_no_redirect_unless_asked(
    receivers: Callable[..., Receiver],
) -> None:
    rcv = receivers(sequence((307, {"Location": "/moved"}, b"", 0.0)))
    base = f"http://127.0.0.1:{rcv.port}"
    policy = Recorder()
    client = async_client(Timeouts.overall(5), policy=policy, connections=2)
    try:
        async with client.post(f"{base}/first", data=b"x", headers={}) as resp:
            assert resp.status == 307
    finally:
        await client.close()
    assert [r.path for r in rcv.requests] == ["/first"]
    rcv.plan = sequence((307, {"Location": "/moved"}, b"", 0.0))
    rcv.requests.clear()
    policy = Recorder()
    client = async_client(Timeouts.overall(5), policy=policy, connections=2, follow_redirects=True)
    try:
        async with client.post(f"{base}/first", data=b"x", headers={}) as resp:
            assert resp.status == 200
    finally:
        await client.close()
    assert [r.path for r in rcv.requests] == ["/first", "/moved"]
    assert policy.urls[-1] == f"{base}/moved"  # every hop is asked about
    assert set(policy.urls) == {f"{base}/first", f"{base}/moved"}


async def test_async_client_timeout(receivers: Callable[..., Receiver]) -> None:
    rcv = receivers(lambda n: (200, {}, b"late", 5.0))
    client = async_client(Timeouts.overall(0.3), policy=PERMISSIVE, connections=1)
    started = time.monotonic()
    try:
        with pytest.raises(TimeoutError) as info:
            async with client.post(rcv.url, data=b"x", headers={}) as resp:
                await resp.read()
    finally:
        await client.close()
    assert time.monotonic() - started < 2.5
    assert describe(info.value, timeout=0.3).error.startswith("timed out after 0.3s")


async def test_client_pool_one_client_per_key(receivers: Callable[..., Receiver]) -> None:
    rcv = receivers()
    policy = Recorder()
    pool = ClientPool(Timeouts.overall(5), policy=policy, connections=3)
    a, b = pool.get("sub-a"), pool.get("sub-b")
    assert pool.get("sub-a") is a and a is not b
    try:
        for client in (a, b):
            async with client.post(rcv.url, data=b"{}", headers={}) as resp:
                assert resp.status == 200
    finally:
        await pool.aclose()
    assert a.closed and b.closed
    assert len(policy.urls) == 2


# -- the Slack client -----------------------------------------------------------------------------


def _slack_api(receivers: Callable[..., Receiver]) -> Receiver:
    ok = json.dumps({"ok": True, "channel": "C1", "ts": "1.2"}).encode()
    return receivers(lambda n: (200, {"content-type": "application/json"}, ok, 0.0))


def test_slack_client_asks_the_policy_before_every_call(
    receivers: Callable[..., Receiver],
) -> None:
    api = _slack_api(receivers)
    base = f"http://127.0.0.1:{api.port}/api"  # no trailing slash: tolerated
    policy = Recorder(refuse="chat.delete")
    client = slack_client("xoxb-t", base_url=base, timeout=2.5, policy=policy)
    assert client.timeout == 3 and client.retry_handlers == []
    client.chat_postMessage(channel="C1", text="hello")
    with pytest.raises(DestinationRefused):
        client.chat_delete(channel="C1", ts="1.2")
    client.chat_postMessage(channel="C1", text="again")
    assert policy.urls == [
        f"{base}/chat.postMessage",
        f"{base}/chat.delete",
        f"{base}/chat.postMessage",
    ]
    assert [r.path for r in api.requests] == ["/api/chat.postMessage"] * 2
    assert api.requests[0].headers["user-agent"].startswith(f"{USER_AGENT} ")


# -- start-up weight -----------------------------------------------------------------------


def test_importing_the_http_module_and_the_loops_stays_light(tmp_path: Path) -> None:
    """Nothing imports httpx, aiohttp or slack_sdk until a request is made."""
    probe = (
        "import ferryman.http, ferryman.http.pool, ferryman.engine.callback_sender, "
        "ferryman.engine.event_deliverer, ferryman.services.deliveries, ferryman.server\n"
        "import sys, json\n"
        "print(json.dumps([m for m in ('httpx', 'aiohttp', 'slack_sdk') if m in sys.modules]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []

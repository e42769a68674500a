"""Run-completion callbacks (SPEC §3, §4): the callback sender against real local
HTTP receivers, on SQLite and PostgreSQL.

Signatures are checked with the ``standardwebhooks`` package (not our code).
Runs are real: created with ``options`` as the API does, driven to their end
by a real worker (steps forced ``inline`` for speed), which queues their
callbacks in the transaction of the final state.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from standardwebhooks.webhooks import Webhook
from tests.webhook_support import (
    Plan,
    Receiver,
    Request,
    always,
    sequence,
    serving,
    verify,
    wait_for,
)

from ferryman.domain.options import RunOptions
from ferryman.dsl.loader import load_pipeline
from ferryman.engine.callback_sender import CallbackSender
from ferryman.engine.worker import Worker
from ferryman.http import DestinationPolicy, DestinationRefused, retry_after
from ferryman.notify import signing
from ferryman.notify.report import one_line_error, slack_text
from ferryman.services.catalog import register
from ferryman.services.runs import RunService
from ferryman.settings import Settings
from ferryman.store.engine import Store
from ferryman.store.tables import callbacks

PIPES = Path(__file__).parent.parent / "pipelines" / "basic.py"


# -- helpers -----------------------------------------------------------------------


def cb_settings(settings: Settings, **kw: Any) -> Settings:
    base: dict[str, Any] = {
        "callback_timeout": 1.0,
        "callback_backoff": 0.1,
        "callback_max_backoff": 0.5,
        "callback_max_attempts": 5,
        "public_url": "https://ferryman.example.com/",
    }
    return settings.updated(**{**base, **kw})


def finish_runs(
    store: Store,
    settings: Settings,
    name: str,
    options: dict[str, Any],
    count: int = 1,
    **params: Any,
) -> list[str]:
    """Create runs (options as the API passes them) and drive them to their end."""
    spec = load_pipeline(f"{PIPES}:{name}")
    with store.write() as conn:
        pv = register(conn, "default", spec)
    run_ids = []
    for _ in range(count):
        started = RunService(store).start_version(
            pv,
            params,
            labels={"team": "ml"},
            options=RunOptions.model_validate({"infrastructure": "inline", **options}),
        )
        assert started.created
        run_ids.append(started.id)
    Worker(store, settings).run_until(set(run_ids), timeout=60)
    return run_ids


def finish_run(
    store: Store, settings: Settings, name: str, options: dict[str, Any], **params: Any
) -> str:
    (run_id,) = finish_runs(store, settings, name, options, **params)
    return run_id


def rows(store: Store, run_id: str | None = None) -> list[Any]:
    with store.read() as conn:
        q = sa.select(callbacks).order_by(callbacks.c.created_at, callbacks.c.id)
        if run_id is not None:
            q = q.where(callbacks.c.run_id == run_id)
        return list(conn.execute(q).all())


def secret_of(settings: Settings) -> str:
    """The per-install secret, read from its file (not through our code)."""
    return (settings.home / "webhook_secret").read_text().strip()


# -- delivery ------------------------------------------------------------------------


def test_signed_webhook_delivered_once_with_the_report(
    store: Store, settings: Settings, receivers: Callable[..., Receiver]
) -> None:
    s = cb_settings(settings)
    rcv = receivers()
    run_id = finish_run(store, s, "fan", {"webhook_url": rcv.url}, n=4)
    (row,) = rows(store, run_id)
    assert (row.kind, row.state, row.attempts) == ("webhook", "pending", 0)

    CallbackSender(store, s).run_until_idle(20)

    (req,) = rcv.requests
    assert req.path == "/hook?token=s3cr3t-path-token"
    assert req.headers["content-type"] == "application/json"
    assert req.headers["webhook-id"] == row.id
    assert req.headers["webhook-signature"].startswith("v1,")
    payload = verify(secret_of(s), req)  # the per-install secret, generated on first use
    assert payload["type"] == "run.succeeded"
    data = payload["data"]
    assert data["run_id"] == run_id
    assert (data["namespace"], data["pipeline"], data["state"]) == ("default", "fan", "succeeded")
    assert len(data["version"]) >= 8
    assert data["failed_step"] is None and data["error"] is None
    assert data["labels"] == {"team": "ml"}
    assert data["duration_seconds"] >= 0
    assert data["started_at"] and data["ended_at"] and payload["timestamp"] == data["ended_at"]
    assert data["links"]["ui"] == f"https://ferryman.example.com/runs/{run_id}"
    assert data["links"]["api"].startswith("https://ferryman.example.com/")

    (row,) = rows(store, run_id)
    assert (row.state, row.attempts, row.last_status, row.last_error) == ("delivered", 1, 200, None)
    assert row.delivered_at is not None


def test_failed_run_reports_failed_step_and_error_excerpt(
    store: Store, settings: Settings, receivers: Callable[..., Receiver]
) -> None:
    secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    s = cb_settings(settings, webhook_secret=secret)
    rcv = receivers()
    run_id = finish_run(store, s, "failing", {"webhook_url": rcv.url}, message="bad data")
    CallbackSender(store, s).run_until_idle(20)
    (req,) = rcv.requests
    assert req.headers["webhook-id"] == rows(store, run_id)[0].id
    payload = verify(secret, req)  # the configured secret
    data = payload["data"]
    assert payload["type"] == "run.failed"
    assert data["state"] == "failed"
    assert data["failed_step"] == "boom"
    assert "RuntimeError: bad data" in data["error"]
    assert len(data["error"]) <= 2000
    assert "boom" in data["message"]
    assert not (s.home / "webhook_secret").exists()  # nothing generated when configured


def test_500_then_200_is_retried_with_the_same_webhook_id(
    store: Store, settings: Settings, receivers: Callable[..., Receiver]
) -> None:
    s = cb_settings(settings)
    rcv = receivers(sequence((500, {}, b"try later", 0.0), (502, {}, b"", 0.0)))
    run_id = finish_run(store, s, "fan", {"webhook_url": rcv.url}, n=2)
    CallbackSender(store, s).run_until_idle(20)
    assert len(rcv.requests) == 3
    (row,) = rows(store, run_id)
    assert set(rcv.ids()) == {row.id}
    bodies = {r.body for r in rcv.requests}
    assert len(bodies) == 1  # byte-for-byte the same report on every attempt
    for r in rcv.requests:
        verify(secret_of(s), r)  # each attempt signed (with its own timestamp)
    # exponential backoff between attempts (0.1 s, then 0.2 s, ±20 %)
    gaps = [b.time - a.time for a, b in zip(rcv.requests, rcv.requests[1:], strict=False)]
    assert gaps[0] >= 0.08 and gaps[1] >= 0.16
    assert (row.state, row.attempts, row.last_status, row.last_error) == ("delivered", 3, 200, None)


def test_429_retry_after_is_honoured(
    store: Store, settings: Settings, receivers: Callable[..., Receiver]
) -> None:
    s = cb_settings(settings, callback_backoff=0.05, callback_max_backoff=10)
    rcv = receivers(sequence((429, {"Retry-After": "2"}, b"slow down", 0.0)))
    run_id = finish_run(store, s, "fan", {"webhook_url": rcv.url}, n=2)
    d = CallbackSender(store, s)
    d.run_until_idle(20)
    first, second = rcv.requests
    assert 1.95 <= second.time - first.time < 4.0  # not the 0.05 s backoff: the receiver's 2 s
    (row,) = rows(store, run_id)
    assert (row.state, row.attempts) == ("delivered", 2)


def test_retry_after_parsing_and_delay_choice(tmp_path: Path) -> None:
    assert retry_after("3") == 3.0
    assert retry_after(" 1.5 ") == 1.5
    assert retry_after("-4") == 0.0
    assert retry_after("soon") is None
    assert retry_after(None) is None
    future = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    got = retry_after(future)
    assert got is not None and 25 <= got <= 31
    s = Settings(home=tmp_path, callback_backoff=20, callback_max_backoff=60)
    d = CallbackSender(Store(s.db_url), s)
    try:
        assert d._delay(1, 1.0) == 1.0  # the receiver's word beats our (longer) backoff
        assert d._delay(1, 3600.0) == 60  # … up to callback_max_backoff
        assert 16 <= d._delay(1, None) <= 24  # backoff, ±20 % jitter
        assert 32 <= d._delay(2, None) <= 48  # exponential: 40 s, ±20 %
        assert 48 <= d._delay(9, None) <= 60  # capped (jitter below the cap)
    finally:
        d.store.dispose()


def test_hanging_receiver_times_out_and_never_delays_the_others(
    store: Store, settings: Settings, receivers: Callable[..., Receiver]
) -> None:
    s = cb_settings(settings, callback_timeout=1.0, callback_backoff=0.1, poll_seconds=5)
    hanging = receivers(sequence((200, {}, b"late", 30.0)))  # first request: hangs
    healthy = receivers()
    slow_run = finish_run(store, s, "fan", {"webhook_url": hanging.url}, n=2)
    fast_run = finish_run(store, s, "fan", {"webhook_url": healthy.url}, n=2)
    with serving(CallbackSender(store, s)):
        wait_for("the healthy receiver", lambda: healthy.requests, 10)
        wait_for("the retry after the timeout", lambda: len(hanging.requests) >= 2, 15)
        wait_for("both delivered", lambda: {r.state for r in rows(store)} == {"delivered"}, 10)
    # Both went out together: the healthy one did not wait for the hung one
    # (which is due first: a one-at-a-time sender would post it first and
    # reach the healthy receiver only after the 1 s timeout).
    lag = healthy.requests[0].time - hanging.requests[0].time
    assert lag < 0.5, f"the healthy receiver waited {lag:.2f}s behind the hanging one"
    (slow,) = rows(store, slow_run)
    (fast,) = rows(store, fast_run)
    assert fast.attempts == 1
    assert slow.attempts == 2
    assert set(hanging.ids()) == {slow.id}
    gap = hanging.requests[1].time - hanging.requests[0].time
    assert 0.9 <= gap < 5, gap  # the attempt was cut at the 1 s timeout, then retried


def test_dead_after_max_attempts_with_last_error(
    store: Store, settings: Settings, receivers: Callable[..., Receiver]
) -> None:
    s = cb_settings(settings, callback_max_attempts=3)
    rcv = receivers(always(500, b"internal  trouble\n"))
    run_id = finish_run(store, s, "fan", {"webhook_url": rcv.url}, n=2)
    CallbackSender(store, s).run_until_idle(20)
    (row,) = rows(store, run_id)
    assert len(rcv.requests) == 3
    assert (row.state, row.attempts, row.last_status) == ("dead", 3, 500)
    # only the status: the answer of a non-public address is never kept
    assert row.last_error == "HTTP 500"
    assert row.delivered_at is None


def test_unreachable_receiver_is_retried_until_it_comes_up(
    store: Store, settings: Settings, receivers: Callable[..., Receiver]
) -> None:
    s = cb_settings(settings, callback_max_attempts=50, callback_max_backoff=0.3)
    probe = receivers()
    port = probe.port
    probe.stop()  # a port nothing listens on
    run_id = finish_run(store, s, "fan", {"webhook_url": f"http://127.0.0.1:{port}/x"}, n=2)
    with serving(CallbackSender(store, s)):
        wait_for("a failed attempt", lambda: rows(store, run_id)[0].attempts >= 2)
        (row,) = rows(store, run_id)
        assert row.state == "pending"
        assert row.last_status is None and "ConnectError" in row.last_error
        rcv = receivers(port=port)
        wait_for("delivery", lambda: rows(store, run_id)[0].state == "delivered")
    (row,) = rows(store, run_id)
    assert set(rcv.ids()) == {row.id}
    verify(secret_of(s), rcv.requests[0])


def test_callback_is_delivered_promptly_after_the_run_ends(
    store: Store, settings: Settings, receivers: Callable[..., Receiver]
) -> None:
    """The callback sender wakes on the run's end (in-process event; NOTIFY on
    PostgreSQL), not on its fallback poll."""
    s = cb_settings(settings, poll_seconds=10)
    rcv = receivers()
    with serving(CallbackSender(store, s)):
        time.sleep(0.2)  # the callback sender is idle, waiting
        finish_run(store, s, "fan", {"webhook_url": rcv.url}, n=2)
        ended = time.time()
        wait_for("the callback", lambda: rcv.requests, 5)
    assert rcv.requests[0].time - ended < 3  # the fallback poll would take 10 s


def test_two_senders_never_post_the_same_callback_twice(
    store: Store, settings: Settings, receivers: Callable[..., Receiver]
) -> None:
    s = cb_settings(settings)
    rcv = receivers(lambda n: (200, {}, b"ok", 0.3))
    run_ids = finish_runs(store, s, "fan", {"webhook_url": rcv.url}, count=8, n=1)
    other = Store(s.db_url)  # a second "process": its own engine and connections
    try:
        a, b = CallbackSender(store, s, concurrency=2), CallbackSender(other, s, concurrency=2)
        with serving(a), serving(b):
            wait_for(
                "all delivered",
                lambda: [r.state for r in rows(store)] == ["delivered"] * len(run_ids),
            )
    finally:
        other.dispose()
    ids = rcv.ids()
    assert len(ids) == len(set(ids)) == len(run_ids)
    assert a.delivered_total + b.delivered_total == len(run_ids)
    assert a.delivered_total > 0 and b.delivered_total > 0


def test_errors_never_end_the_loop(
    store: Store,
    settings: Settings,
    receivers: Callable[..., Receiver],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A failing turn (database trouble) and a crashing attempt (a bug) are
    logged and retried; the callback is still delivered."""
    import ferryman.engine.callback_sender.loop as sender_module

    s = cb_settings(settings)
    rcv = receivers()
    run_id = finish_run(store, s, "failing", {"webhook_url": rcv.url})
    real_build = sender_module.build_report
    calls = {"build": 0, "claim": 0}

    def flaky_build(*args: Any, **kw: Any) -> Any:
        calls["build"] += 1
        if calls["build"] == 1:
            raise RuntimeError("report bug")
        return real_build(*args, **kw)

    monkeypatch.setattr(sender_module, "build_report", flaky_build)
    d = CallbackSender(store, s)
    real_claim = d.claim

    def flaky_claim(*args: Any) -> Any:
        calls["claim"] += 1
        if calls["claim"] == 1:
            raise sa.exc.OperationalError("UPDATE", {}, Exception("database is locked"))
        return real_claim(*args)

    monkeypatch.setattr(d, "claim", flaky_claim)
    with serving(d):
        wait_for("delivery", lambda: rows(store, run_id)[0].state == "delivered")
    (row,) = rows(store, run_id)
    assert row.attempts == 2 and calls["claim"] >= 3
    assert len(rcv.requests) == 1
    verify(secret_of(s), rcv.requests[0])


def test_a_claim_takes_at_most_its_free_slots(store: Store, settings: Settings) -> None:
    """Regression: on PostgreSQL, ``UPDATE … WHERE id IN (SELECT … LIMIT n FOR
    UPDATE SKIP LOCKED)`` can claim every due row (a re-scanned semi-join)."""
    s = cb_settings(settings)
    finish_runs(store, s, "fan", {"webhook_url": "http://127.0.0.1:9/x"}, count=6, n=1)
    d = CallbackSender(store, s, concurrency=2)
    try:
        claimed = d.claim(2, [])
        assert len(claimed) == 2
        assert sorted(r.attempts for r in rows(store)) == [0, 0, 0, 0, 1, 1]
        again = d.claim(10, [c.id for c in claimed])
        assert len(again) == 4 and not {c.id for c in again} & {c.id for c in claimed}
        assert d.claim(10, []) == []  # everything is leased now
    finally:
        d.close()


def test_the_destination_policy_is_asked_and_a_refusal_is_dead_at_once(
    store: Store,
    settings: Settings,
    receivers: Callable[..., Receiver],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Webhooks and Slack messages go through ``ferryman.http``'s policy: a
    refused destination is never posted to, and no retry can help."""
    import ferryman.engine.callback_sender.loop as sender_module

    class RefuseHook(DestinationPolicy):
        def __init__(self) -> None:
            self.urls: list[str] = []

        def check_url(self, url: str) -> None:
            self.urls.append(url)
            if "/hook" in url or "chat.postMessage" in url:
                raise DestinationRefused("not on the allow-list")

    policy = RefuseHook()
    monkeypatch.setattr(sender_module, "destination_policy", lambda s: policy)
    hook, api = receivers(), slack_api(receivers)
    s = cb_settings(
        settings,
        slack_bot_token="xoxb-t",
        slack_api_url=f"http://127.0.0.1:{api.port}/api/",
    )
    finish_run(store, s, "fan", {"webhook_url": hook.url, "slack_channel": "C1"}, n=1)
    CallbackSender(store, s).run_until_idle(20)
    assert hook.requests == [] and api.requests == []
    assert sorted(policy.urls) == sorted(
        [hook.url, f"http://127.0.0.1:{api.port}/api/chat.postMessage"]
    )
    by_kind = {r.kind: r for r in rows(store)}
    assert (by_kind["webhook"].state, by_kind["webhook"].attempts) == ("dead", 1)
    assert by_kind["webhook"].last_error == "destination refused: not on the allow-list"
    assert (by_kind["slack"].state, by_kind["slack"].attempts) == ("dead", 1)
    assert by_kind["slack"].last_error == "slack: destination refused: not on the allow-list"


# -- Slack ----------------------------------------------------------------------------


def slack_api(receivers: Callable[..., Receiver], plan: Plan | None = None) -> Receiver:
    ok = json.dumps({"ok": True, "channel": "C1", "ts": "1700000001.000200"}).encode()
    return receivers(plan or (lambda n: (200, {"content-type": "application/json"}, ok, 0.0)))


def slack_call(req: Request) -> dict[str, Any]:
    """A chat.postMessage call, JSON or form-encoded."""
    if req.headers.get("content-type", "").startswith("application/json"):
        data: dict[str, Any] = json.loads(req.body)
        return data
    from urllib.parse import parse_qsl

    return dict(parse_qsl(req.body.decode()))


def test_slack_message_posted_in_the_thread(
    store: Store, settings: Settings, receivers: Callable[..., Receiver]
) -> None:
    api = slack_api(receivers)
    s = cb_settings(
        settings,
        slack_bot_token="xoxb-test-token",
        slack_api_url=f"http://127.0.0.1:{api.port}/api/",
    )
    ok_run = finish_run(
        store, s, "fan", {"slack_channel": "C0123", "slack_thread": "1700000000.000100"}, n=2
    )
    bad_run = finish_run(
        store, s, "failing", {"slack_channel": "C0123", "slack_thread": "1700000000.000999"}
    )
    CallbackSender(store, s).run_until_idle(20)
    assert [r.path for r in api.requests] == ["/api/chat.postMessage"] * 2
    assert {r.headers["authorization"] for r in api.requests} == {"Bearer xoxb-test-token"}
    calls = {slack_call(r)["thread_ts"]: slack_call(r) for r in api.requests}
    ok_call = calls["1700000000.000100"]
    assert ok_call["channel"] == "C0123"
    assert ok_call["text"].startswith(":white_check_mark: *default/fan* run")
    assert "succeeded" in ok_call["text"]
    assert f"https://ferryman.example.com/runs/{ok_run}" in ok_call["text"]
    bad_call = calls["1700000000.000999"]
    assert bad_call["channel"] == "C0123"
    assert bad_call["text"].startswith(":x: *default/failing* run")
    assert "at step `boom`" in bad_call["text"]
    assert "RuntimeError: bad data" in bad_call["text"]
    assert "Traceback" not in bad_call["text"]
    assert {r.state for r in rows(store)} == {"delivered"}
    assert {r.kind for r in rows(store, bad_run)} == {"slack"}


def test_slack_rate_limit_and_permanent_errors(
    store: Store, settings: Settings, receivers: Callable[..., Receiver]
) -> None:
    def plan(n: int) -> tuple[int, dict[str, str], bytes, float]:
        if n == 0:
            body = json.dumps({"ok": False, "error": "ratelimited"}).encode()
            return 429, {"Retry-After": "1", "content-type": "application/json"}, body, 0.0
        body = json.dumps({"ok": True, "ts": "1.2"}).encode()
        return 200, {"content-type": "application/json"}, body, 0.0

    api = slack_api(receivers, plan)
    s = cb_settings(
        settings,
        slack_bot_token="xoxb-t",
        slack_api_url=f"http://127.0.0.1:{api.port}/api",  # no trailing slash: tolerated
        callback_max_backoff=5,
    )
    run_id = finish_run(store, s, "fan", {"slack_channel": "C1"}, n=1)
    CallbackSender(store, s).run_until_idle(20)
    first, second = api.requests
    assert second.time - first.time >= 0.95
    assert "thread_ts" not in slack_call(first) or not slack_call(first)["thread_ts"]
    (row,) = rows(store, run_id)
    assert (row.state, row.attempts) == ("delivered", 2)

    gone = json.dumps({"ok": False, "error": "channel_not_found"}).encode()
    api2 = slack_api(receivers, lambda n: (200, {"content-type": "application/json"}, gone, 0.0))
    s2 = cb_settings(s, slack_api_url=f"http://127.0.0.1:{api2.port}/api/")
    run2 = finish_run(store, s2, "fan", {"slack_channel": "C404"}, n=1)
    CallbackSender(store, s2).run_until_idle(20)
    (row,) = rows(store, run2)
    assert len(api2.requests) == 1  # no retry can fix a missing channel
    assert (row.state, row.attempts, row.last_error) == ("dead", 1, "slack: channel_not_found")


def test_secrets_are_never_logged(
    store: Store,
    settings: Settings,
    receivers: Callable[..., Receiver],
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    api = slack_api(receivers, always(500, b"oops"))
    hook = receivers(sequence((500, {}, b"", 0.0)))
    s = cb_settings(
        settings,
        webhook_secret=secret,
        slack_bot_token="xoxb-very-secret",
        slack_api_url=f"http://127.0.0.1:{api.port}/api/",
        callback_max_attempts=2,
    )
    caplog.set_level(logging.DEBUG)
    finish_run(store, s, "fan", {"webhook_url": hook.url, "slack_channel": "C9"}, n=1)
    CallbackSender(store, s).run_until_idle(20)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "callback" in text  # attempts are logged …
    for needle in ("xoxb-very-secret", secret, secret[6:], "s3cr3t-path-token"):
        assert needle not in text  # … without secrets or URL paths
    states = {r.kind: r.state for r in rows(store)}
    assert states == {"webhook": "delivered", "slack": "dead"}


# -- signing and rendering (no database) ------------------------------------------


def test_our_signatures_verify_with_standardwebhooks() -> None:
    secret = signing.generate_secret()
    assert secret.startswith("whsec_")
    body = json.dumps({"type": "run.succeeded", "data": {"x": "é"}}).encode()
    headers = signing.signed_headers(signing.secret_key(secret), "msg_1", body)
    assert Webhook(secret).verify(body, headers)["type"] == "run.succeeded"
    assert Webhook(secret[6:]).verify(body, headers)  # the bare base64 form too
    ts = int(headers["webhook-timestamp"])
    expected = Webhook(secret).sign("msg_1", dt_from(ts), body.decode())
    assert headers["webhook-signature"] == expected
    with pytest.raises(Exception, match="signature"):
        Webhook(signing.generate_secret()).verify(body, headers)


def dt_from(ts: int) -> Any:
    import datetime as dt

    return dt.datetime.fromtimestamp(ts, dt.UTC)


def test_secret_file_is_private_stable_and_validated(tmp_path: Path) -> None:
    s = Settings(home=tmp_path / "home")
    secret, created = signing.load_or_create_secret(s)
    assert created
    path = tmp_path / "home" / "webhook_secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert signing.load_or_create_secret(s) == (secret, False)  # survives restarts
    assert [p.name for p in path.parent.iterdir()] == ["webhook_secret"]  # no temp left
    with pytest.raises(signing.SecretError):
        signing.load_or_create_secret(Settings(home=tmp_path, webhook_secret="not base64!"))
    with pytest.raises(signing.SecretError):
        signing.secret_key("whsec_" + base64.b64encode(b"short").decode())


def test_secret_creation_race_has_one_winner(tmp_path: Path) -> None:
    s = Settings(home=tmp_path / "home")
    results: list[tuple[str, bool]] = []
    barrier = threading.Barrier(8)

    def go() -> None:
        barrier.wait()
        results.append(signing.load_or_create_secret(s))

    threads = [threading.Thread(target=go) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({r[0] for r in results}) == 1
    assert sum(created for _, created in results) == 1


def test_slack_text_is_short_and_never_a_traceback() -> None:
    tb = (
        "Traceback (most recent call last):\n"
        '  File "/x/y.py", line 3, in <module>\n    boom()\n'
        "ValueError: <b>bad</b> & worse"
    )
    assert one_line_error(tb) == "ValueError: <b>bad</b> & worse"
    assert one_line_error("first line\nsecond") == "first line"
    assert one_line_error("x" * 1000) is not None
    assert len(one_line_error("x" * 1000) or "") <= 300
    report = {
        "type": "run.failed",
        "data": {
            "run_id": "0123456789abcdef",
            "namespace": "ml",
            "pipeline": "train",
            "state": "failed",
            "duration_seconds": 125.2,
            "failed_step": "fit",
            "error": tb,
            "message": "",
            "links": {"ui": "https://f.example/runs/0123456789abcdef"},
        },
    }
    text = slack_text(report)
    assert text.splitlines()[0] == (
        ":x: *ml/train* run `0123456789ab` failed in 2m 05s at step `fit` "
        "(<https://f.example/runs/0123456789abcdef|details>)"
    )
    assert text.splitlines()[1] == "> ValueError: &lt;b&gt;bad&lt;/b&gt; &amp; worse"
    assert "Traceback" not in text and "File" not in text
    report["data"].update(state="cancelled", message="cancelled by alice", error=None)
    assert slack_text(report).startswith(":no_entry_sign: *ml/train*")
    assert slack_text(report).endswith("> cancelled by alice")

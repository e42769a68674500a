"""Event subscriptions and their durable deliveries (SPEC §4), on SQLite and
PostgreSQL, against real HTTP receivers on loopback.

Runs are real (a real worker drives them, steps forced ``inline``), so the
deliveries are queued by the transition gate in the events' transactions.
Signatures are checked with the ``standardwebhooks`` package, not our code.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from tests.webhook_support import (
    Receiver,
    always,
    failing_first,
    serving,
    verify,
    wait_for,
)

from ferryman.domain.options import RunOptions
from ferryman.dsl.loader import load_pipeline
from ferryman.engine.event_deliverer import EventDeliverer
from ferryman.engine.worker import Worker
from ferryman.errors import InvalidInput
from ferryman.http import DestinationPolicy, DestinationRefused, destination_policy
from ferryman.services import deliveries as dels
from ferryman.services import subscriptions as subs
from ferryman.services.catalog import register
from ferryman.services.fanout import WAITING
from ferryman.services.runs import RunService
from ferryman.services.subscriptions_file import FileError, reconcile_file
from ferryman.settings import Settings
from ferryman.store.engine import Store
from ferryman.store.tables import deliveries, delivery_attempts, events, subscriptions, utcnow

PIPES = Path(__file__).parent.parent / "pipelines" / "basic.py"


# -- helpers ------------------------------------------------------------------------------


def fast(settings: Settings, **kw: Any) -> Settings:
    base: dict[str, Any] = {
        "delivery_timeout": 1.0,
        "delivery_backoff": 0.05,
        "delivery_max_backoff": 0.3,
        "delivery_max_attempts": 30,
        "poll_seconds": 0.2,
    }
    return Settings.model_validate({**settings.model_dump(), **base, **kw})


def subscribe(store: Store, name: str, url: str, **kw: Any) -> tuple[dict[str, Any], str]:
    with store.write() as conn:
        return subs.create_subscription(
            conn, subs.SubscriptionCreate.model_validate({"name": name, "url": url, **kw})
        )


def finish_runs(
    store: Store, settings: Settings, name: str = "fan", count: int = 1, **params: Any
) -> list[str]:
    """Create runs and drive them to their end with a real worker (inline steps)."""
    spec = load_pipeline(f"{PIPES}:{name}")
    with store.write() as conn:
        pv = register(conn, "default", spec)
    ids = []
    for _ in range(count):
        started = RunService(store).start_version(
            pv, params, labels={"team": "ml"}, options=RunOptions(infrastructure="inline")
        )
        ids.append(started.id)
    Worker(store, settings).run_until(set(ids), timeout=60)
    return ids


def events_of(store: Store, run_ids: list[str]) -> list[Any]:
    with store.read() as conn:
        return list(
            conn.execute(
                sa.select(events).where(events.c.run_id.in_(run_ids)).order_by(events.c.seq)
            )
        )


def delivery_rows(store: Store, sub_id: str | None = None) -> list[Any]:
    with store.read() as conn:
        q = sa.select(deliveries).order_by(deliveries.c.id)
        if sub_id:
            q = q.where(deliveries.c.subscription_id == sub_id)
        return list(conn.execute(q))


# -- delivery guarantees ---------------------------------------------------------------------


def test_receiver_down_then_back_gets_every_event_in_order(
    store: Store, settings: Settings, receivers: Callable[..., Receiver]
) -> None:
    s = fast(settings)
    rec = receivers(failing_first(7))
    _, secret = subscribe(store, "all", rec.url)
    assert secret.startswith("whsec_")
    run_ids = finish_runs(store, s, "fan", count=3, n=4)
    evs = events_of(store, run_ids)
    assert len(evs) > 20
    EventDeliverer(store, s).run_until_idle(60)

    # every request is signed (checked with the standardwebhooks package)
    by_id = {e.id: e for e in evs}
    for req in rec.requests:
        payload = verify(secret, req)
        assert req.headers["webhook-id"] == payload["id"]  # duplicates carry the same id
        assert payload["id"] in by_id
        assert payload["type"] == by_id[payload["id"]].type
    assert len(rec.requests) >= len(evs) + 7  # the 7 failures were retried
    ok = rec.ok_requests()
    got = [r.headers["webhook-id"] for r in ok]
    assert set(got) == set(by_id), "every event arrived, none missing"
    for run_id in run_ids:
        expected = [e.id for e in evs if e.run_id == run_id]
        arrived = [i for i in got if by_id[i].run_id == run_id]
        assert _dedup(arrived) == expected, f"run {run_id}: not in event order"
    assert {r.state for r in delivery_rows(store)} == {"delivered"}
    # the envelope of SPEC §4
    first = ok[0].json()
    assert set(first) >= {"id", "type", "time", "namespace", "pipeline", "pipeline_version",
                          "run_id", "node", "attempt", "message", "labels"}  # fmt: skip
    assert first["labels"] == {"team": "ml"}


def test_a_failure_inside_a_chain_leaves_the_rest_untried(
    store: Store, settings: Settings, receivers: Callable[..., Receiver]
) -> None:
    # A run's events are queued before the deliverer starts: it claims each
    # run's deliveries as one chain and posts them in order. Requests 3 and 4
    # fail: the chain stops there, the deliveries behind go back to waiting
    # without an attempt, and everything arrives, in order, once.
    s = fast(settings)
    rec = receivers(lambda n: (500, {}, b"no", 0.0) if n in (3, 4) else (200, {}, b"ok", 0.0))
    sub, _ = subscribe(store, "chain", rec.url)
    run_ids = finish_runs(store, s, "fan", count=2, n=3)
    evs = events_of(store, run_ids)
    EventDeliverer(store, s).run_until_idle(60)
    got = [r.headers["webhook-id"] for r in rec.ok_requests()]
    by_id = {e.id: e for e in evs}
    assert sorted(got) == sorted(by_id), "each event delivered exactly once"
    for run_id in run_ids:
        assert [i for i in got if by_id[i].run_id == run_id] == [
            e.id for e in evs if e.run_id == run_id
        ]
    # No phantom attempts: a delivery's attempt count is the number of
    # requests the receiver saw for it (the two failures were tried twice).
    sent: dict[str, int] = {}
    for r in rec.requests:
        sent[r.headers["webhook-id"]] = sent.get(r.headers["webhook-id"], 0) + 1
    rows = delivery_rows(store, sub["id"])
    assert {r.state for r in rows} == {"delivered"}
    assert {r.event_id: r.attempts for r in rows} == sent
    assert sorted(sent.values()).count(2) == 2 and len(rec.requests) == len(evs) + 2
    with store.read() as conn:
        n_attempts = conn.execute(sa.select(sa.func.count()).select_from(delivery_attempts))
        assert n_attempts.scalar_one() == len(rec.requests)


def test_stopping_inside_a_chain_puts_the_untried_back(
    store: Store, settings: Settings, receivers: Callable[..., Receiver]
) -> None:
    # The receiver holds its first request; the deliverer is stopped
    # meanwhile: the deliveries behind it in its chain were never tried, so
    # they wait again with no attempt counted (the one in flight keeps its
    # lease: whether it arrived is unknown, it is retried after the lease).
    s = fast(settings, grace_seconds=0.5)
    rec = receivers(lambda n: (200, {}, b"late", 5.0) if n == 0 else (200, {}, b"ok", 0.0))
    sub, _ = subscribe(store, "stop", rec.url)
    finish_runs(store, s, "fan", n=2)
    with serving(EventDeliverer(store, s)):
        wait_for("the first request", lambda: rec.requests)
    rows = delivery_rows(store, sub["id"])
    assert len(rows) > 3
    first, rest = rows[0], rows[1:]
    assert first.state == "pending" and first.attempts == 1
    assert first.next_attempt_at > utcnow()  # still leased
    assert all(r.state == "pending" and r.attempts == 0 for r in rest)
    assert all(r.next_attempt_at == WAITING for r in rest), [
        (r.id, r.next_attempt_at) for r in rest
    ]
    assert len(rec.requests) == 1


def _dedup(ids: list[str]) -> list[str]:
    seen: set[str] = set()
    return [i for i in ids if not (i in seen or seen.add(i))]  # type: ignore[func-returns-value]


def test_hanging_subscriber_never_delays_a_healthy_one(
    store: Store, settings: Settings, receivers: Callable[..., Receiver]
) -> None:
    s = fast(settings, delivery_timeout=3.0, delivery_per_subscriber=4, delivery_concurrency=16)
    hang = receivers(lambda n: (200, {}, b"late", 30.0))
    healthy = receivers()
    subscribe(store, "hang", hang.url)
    subscribe(store, "healthy", healthy.url, event_types=["RunQueued", "RunSucceeded"])
    with serving(EventDeliverer(store, s)):
        run_ids = finish_runs(store, s, "fan", count=6, n=3)
        evs = [e for e in events_of(store, run_ids) if e.type in ("RunQueued", "RunSucceeded")]
        wait_for("the healthy deliveries", lambda: len(healthy.ok_requests()) >= len(evs))
        assert len(hang.requests) >= 4  # the hanging one was being tried meanwhile
    by_id = {e.id: e for e in evs}
    delays = [r.time - by_id[r.headers["webhook-id"]].time.timestamp() for r in healthy.requests]
    # The hanging receiver holds its 4 slots for 3 s each; the healthy one's
    # events arrive well within that (bound generous for a loaded 2-core box).
    assert max(delays) < 1.5, sorted(delays)[-5:]


def test_retry_after_is_honoured(
    store: Store, settings: Settings, receivers: Callable[..., Receiver]
) -> None:
    s = fast(settings, delivery_max_backoff=5.0)
    rec = receivers(lambda n: (429, {"Retry-After": "1"}, b"slow down", 0.0) if n == 0
                    else (200, {}, b"ok", 0.0))  # fmt: skip
    subscribe(store, "ra", rec.url, event_types=["RunSucceeded"])
    finish_runs(store, s, "fan", n=2)
    EventDeliverer(store, s).run_until_idle(30)
    assert len(rec.requests) == 2
    gap = rec.requests[1].time - rec.requests[0].time
    assert 0.9 <= gap < 3.0


def test_410_disables_the_subscription_until_enabled_again(
    store: Store, settings: Settings, receivers: Callable[..., Receiver]
) -> None:
    s = fast(settings)
    gone = receivers(lambda n: (410, {}, b"gone", 0.0) if n == 0 else (200, {}, b"ok", 0.0))
    sub, _ = subscribe(store, "gone", gone.url, event_types=["RunQueued", "RunSucceeded"])
    finish_runs(store, s, "fan", n=2)
    EventDeliverer(store, s).run_until_idle(30)  # idle: a disabled subscription waits
    assert len(gone.requests) == 1
    with store.read() as conn:
        rec = subs.get_subscription(conn, "gone")
    assert rec["enabled"] is False
    assert "410" in rec["disabled_reason"]
    rows = delivery_rows(store, sub["id"])
    assert [r.state for r in rows] == ["pending", "pending"]
    assert rows[0].last_status == 410
    # no new deliveries are queued for a disabled subscription
    finish_runs(store, s, "fan", n=2)
    assert len(delivery_rows(store, sub["id"])) == 2
    with store.write() as conn:
        subs.update_subscription(conn, "gone", subs.SubscriptionUpdate(enabled=True))
        assert subs.get_subscription(conn, "gone")["disabled_reason"] is None
    EventDeliverer(store, s).run_until_idle(30)
    assert [r.state for r in delivery_rows(store, sub["id"])] == ["delivered"] * 2
    assert len(gone.ok_requests()) == 2


def test_dead_letter_after_attempts_then_redeliver(
    store: Store, settings: Settings, receivers: Callable[..., Receiver]
) -> None:
    s = fast(settings, delivery_max_attempts=3)
    down = True
    rec = receivers(lambda n: (500, {}, b"<h1>database is down</h1>", 0.0) if down
                    else (200, {}, b"ok", 0.0))  # fmt: skip
    sub, secret = subscribe(store, "dl", rec.url, event_types=["RunSucceeded"])
    finish_runs(store, s, "fan", n=2)
    EventDeliverer(store, s).run_until_idle(30)
    (row,) = delivery_rows(store, sub["id"])
    assert row.state == "dead" and row.attempts == 3 and row.last_status == 500
    with store.read() as conn:
        (dead,) = dels.list_deliveries(conn, subscription="dl", state="dead")
        detail = dels.get_delivery(conn, dead["id"])
    assert [a["status"] for a in detail["attempt_log"]] == [500, 500, 500]
    # a non-2xx answer from a non-public address (this loopback receiver) is
    # never kept: an internal service's page must not be read back
    assert [a["response"] for a in detail["attempt_log"]] == [None, None, None]
    assert all(a["latency_ms"] >= 0 for a in detail["attempt_log"])
    assert len(rec.requests) == 3
    down = False
    with store.write() as conn:
        assert dels.redeliver(conn, [dead["id"]]) == 1
    EventDeliverer(store, s).run_until_idle(30)
    (row,) = delivery_rows(store, sub["id"])
    assert row.state == "delivered"
    ids = {r.headers["webhook-id"] for r in rec.requests}
    assert ids == {row.event_id}  # the same id on every attempt, redelivery included
    verify(secret, rec.requests[-1])


def test_dead_letter_after_max_age(
    store: Store, settings: Settings, receivers: Callable[..., Receiver]
) -> None:
    s = fast(settings, delivery_max_age=2.0, delivery_max_attempts=1000)
    rec = receivers(always(503, b"maintenance"))
    sub, _ = subscribe(store, "age", rec.url, event_types=["RunSucceeded"])
    finish_runs(store, s, "fan", n=2)
    t0 = time.monotonic()
    EventDeliverer(store, s).run_until_idle(30)
    (row,) = delivery_rows(store, sub["id"])
    assert row.state == "dead" and row.attempts >= 2
    assert row.attempts < 1000
    assert time.monotonic() - t0 < 10


def test_filters(store: Store, settings: Settings, receivers: Callable[..., Receiver]) -> None:
    s = fast(settings)
    rec = receivers()
    subscribe(store, "types", rec.url, event_types=["RunSucceeded", "RunFailed"])
    subscribe(store, "other-ns", rec.url, namespaces=["elsewhere"])
    subscribe(store, "by-pipeline", rec.url, pipelines=["default/failing"])
    subscribe(store, "by-label", rec.url, labels={"team": "ml"}, event_types=["RunQueued"])
    subscribe(store, "wrong-label", rec.url, labels={"team": "web"})
    subscribe(store, "off", rec.url, enabled=False)
    ok_id, fail_id = finish_runs(store, s, "fan", n=2)[0], finish_runs(store, s, "failing")[0]
    with store.read() as conn:
        got = conn.execute(
            sa.select(subscriptions.c.name, deliveries.c.run_id, deliveries.c.event_type).join(
                subscriptions, subscriptions.c.id == deliveries.c.subscription_id
            )
        ).all()
    by: dict[str, list[tuple[str, str]]] = {}
    for name, run_id, etype in got:
        by.setdefault(name, []).append((run_id, etype))
    assert sorted(by["types"]) == sorted([(ok_id, "RunSucceeded"), (fail_id, "RunFailed")])
    assert {r for r, _ in by["by-pipeline"]} == {fail_id}
    assert sorted(by["by-label"]) == sorted([(ok_id, "RunQueued"), (fail_id, "RunQueued")])
    assert "other-ns" not in by and "wrong-label" not in by and "off" not in by


def test_a_subscription_made_elsewhere_applies_to_the_next_transaction(
    settings: Settings, receivers: Callable[..., Receiver]
) -> None:
    """Two stores = two processes' caches: a change through one is seen by the other."""
    a, b = Store.from_settings(settings), Store.from_settings(settings)
    try:
        s = fast(settings)
        finish_runs(a, s, "fan", n=2)  # a's cache: no subscriptions
        assert delivery_rows(a) == []
        sub, _ = subscribe(b, "late", receivers().url, event_types=["RunSucceeded"])
        finish_runs(a, s, "fan", n=2)
        assert len(delivery_rows(a, sub["id"])) == 1
        with b.write() as conn:
            subs.update_subscription(conn, "late", subs.SubscriptionUpdate(enabled=False))
        finish_runs(a, s, "fan", n=2)
        assert len(delivery_rows(a, sub["id"])) == 1
    finally:
        a.dispose()
        b.dispose()


# -- formats ------------------------------------------------------------------------------------


def test_kfp_format_field_by_field(
    store: Store, settings: Settings, receivers: Callable[..., Receiver]
) -> None:
    s = fast(settings)
    rec = receivers()
    _, secret = subscribe(store, "kfp", rec.url, format="kfp")
    ok_id = finish_runs(store, s, "fan", n=2)[0]
    fail_id = finish_runs(store, s, "failing", message="bad data")[0]
    EventDeliverer(store, s).run_until_idle(30)
    evs = events_of(store, [ok_id, fail_id])
    mapping = {
        "RunRunning": "WorkflowRunning",
        "RunSucceeded": "WorkflowSucceeded",
        "RunFailed": "WorkflowFailed",
        "NodeSucceeded": "WorkflowNodeSucceeded",
        "NodeFailed": "WorkflowNodeFailed",
    }
    sent = [e for e in evs if e.type in mapping]
    by_id = {e.id: e for e in sent}
    assert len(rec.requests) == len(sent)  # nothing without a KFP equivalent
    for req in rec.requests:
        body = verify(secret, req)
        e = by_id[req.headers["webhook-id"]]
        assert set(body) == {"KfpRunId", "WorkflowName", "NodeName", "EventType", "Message"}
        # shaped like KFP's and Argo's (issue 12, item 14), derived from the run
        assert body["KfpRunId"] == str(uuid.UUID(e.run_id))
        assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
                            body["KfpRunId"])  # fmt: skip
        assert body["WorkflowName"] == f"{e.pipeline}-{e.run_id}"  # fan, failing: valid already
        assert body["EventType"] == mapping[e.type]
        assert body["NodeName"] == (e.node or "")
        assert body["Message"] == e.message
    kinds = {(r.json()["EventType"], r.json()["NodeName"]) for r in rec.requests}
    assert ("WorkflowNodeFailed", "boom") in kinds
    assert ("WorkflowNodeSucceeded", "numbers") in kinds
    assert ("WorkflowFailed", "") in kinds and ("WorkflowSucceeded", "") in kinds
    failed = next(r.json() for r in rec.requests if r.json()["EventType"] == "WorkflowNodeFailed")
    assert "bad data" in failed["Message"]


def test_slack_and_teams_formats(
    store: Store, settings: Settings, receivers: Callable[..., Receiver]
) -> None:
    s = fast(settings, public_url="https://ferryman.example.com/")
    slack, teams = receivers(), receivers()
    subscribe(store, "slack", slack.url, format="slack", event_types=["RunFailed"])
    subscribe(store, "teams", teams.url, format="teams", event_types=["RunFailed"])
    (run_id,) = finish_runs(store, s, "failing", message="<@here> & co")
    EventDeliverer(store, s).run_until_idle(30)
    (msg,) = [r.json() for r in slack.requests]
    assert msg["text"].startswith(":x: RunFailed: default/failing")
    assert "&lt;@here&gt; &amp; co" in msg["text"] and "<@here>" not in msg["text"]
    assert f"https://ferryman.example.com/runs/{run_id}" in json.dumps(msg["blocks"])
    (card,) = [r.json() for r in teams.requests]
    assert card["@type"] == "MessageCard" and card["themeColor"] == "E01E5A"
    facts = {f["name"]: f["value"] for f in card["sections"][0]["facts"]}
    assert facts["Run"] == run_id and facts["Pipeline"] == "default/failing"
    uri = card["potentialAction"][0]["targets"][0]["uri"]
    assert uri == f"https://ferryman.example.com/runs/{run_id}"


# -- validation, test sends, the file --------------------------------------------------------------


def test_bad_subscriptions_list_every_problem() -> None:
    with pytest.raises(Exception) as info:
        subs.SubscriptionCreate.model_validate(
            {
                "name": "bad name!",
                "url": "ftp://x",
                "format": "nope",
                "secret": "whsec_short",
                "event_types": ["RunExploded"],
                "headers": {"webhook-id": "x"},
            }
        )
    text = str(info.value)
    for field_name in ("name", "url", "format", "secret", "event_types", "headers"):
        assert field_name in text


def test_send_test_shows_the_receivers_answer(
    store: Store, settings: Settings, receivers: Callable[..., Receiver]
) -> None:
    rec = receivers(always(202, b"queued it"))
    _, secret = subscribe(store, "t", rec.url, headers={"X-Team": "ml"})
    policy = destination_policy(settings)
    with store.read() as conn:
        res = dels.send_test(conn, "t", policy=policy, timeout=5)
    assert res.status == 202 and res.response == "queued it" and res.error is None
    (req,) = rec.requests
    assert verify(secret, req)["data"] == {"test": True}
    assert req.headers["x-team"] == "ml"
    with store.read() as conn:
        res = dels.send_test(conn, "t", policy=policy, timeout=5, event_type="NodeFailed")
        assert rec.requests[-1].json()["node"] == "train"
    rec.stop()
    with store.read() as conn:
        res = dels.send_test(conn, "t", policy=policy, timeout=2)
    assert res.status is None and res.error and "path-token" not in res.error


class RefuseBlocked(DestinationPolicy):
    """Refuses every URL with ``blocked`` in it (a stand-in for a production policy)."""

    def check_url(self, url: str) -> None:
        if "blocked" in url:
            raise DestinationRefused("blocked by policy")


def test_the_destination_policy_is_applied_when_set_and_when_sent(
    store: Store,
    settings: Settings,
    receivers: Callable[..., Receiver],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    import ferryman.engine.event_deliverer.loop as deliverer_module

    policy = RefuseBlocked()
    rec = receivers()
    blocked_url = rec.url.replace("/hook", "/blocked")
    # when a URL is set: create, update, the subscriptions file
    spec = subs.SubscriptionCreate(name="b", url=blocked_url)
    with store.write() as conn, pytest.raises(InvalidInput, match="destination refused"):
        subs.create_subscription(conn, spec, policy=policy)
    subscribe(store, "ok", rec.url, event_types=["RunSucceeded"])
    change = subs.SubscriptionUpdate(url=blocked_url)
    with store.write() as conn, pytest.raises(InvalidInput, match="blocked by policy"):
        subs.update_subscription(conn, "ok", change, policy=policy)
    with store.write() as conn, pytest.raises(FileError, match="b: url: destination refused"):
        reconcile_file(conn, [spec], policy=policy)
    # when sent: a subscription made before the policy refused it (test send, deliverer)
    with store.write() as conn:
        subs.update_subscription(conn, "ok", change)
        res = dels.send_test(conn, "ok", policy=policy, timeout=2)
    assert res.status is None and res.error == "destination refused: blocked by policy"
    monkeypatch.setattr(deliverer_module, "destination_policy", lambda s: policy)
    finish_runs(store, fast(settings), "fan", n=2)
    EventDeliverer(store, fast(settings)).run_until_idle(30)
    (row,) = delivery_rows(store)
    assert (row.state, row.attempts, row.last_status) == ("dead", 1, None)
    assert row.last_error == "destination refused: blocked by policy"
    assert rec.requests == []


def test_subscriptions_file_is_loaded_and_reloaded(
    store: Store,
    settings: Settings,
    receivers: Callable[..., Receiver],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    a, b = receivers(), receivers()
    path = tmp_path / "subs.yaml"
    monkeypatch.setenv("TEST_SUB_SECRET", "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY")
    path.write_text(
        f"- name: from-file\n  url: {a.url}\n  secret_env: TEST_SUB_SECRET\n"
        "  event_types: [RunSucceeded]\n"
    )
    s = fast(settings, subscriptions_file=path)

    def names() -> dict[str, Any]:
        with store.read() as conn:
            return {r["name"]: r for r in subs.list_subscriptions(conn)}

    with serving(EventDeliverer(store, s)):
        wait_for("the file to load", lambda: "from-file" in names())
        assert names()["from-file"]["source"] == "file"
        finish_runs(store, s, "fan", n=2)
        wait_for("delivery", lambda: a.ok_requests())
        verify("whsec_QUJDREVGR0hJSktMTU5PUFFSU1RVVldY", a.requests[0])
        with store.write() as conn, pytest.raises(Exception, match="subscriptions file"):
            subs.delete_subscription(conn, "from-file")
        # change it: new URL, and a second entry (JSON is YAML too)
        time.sleep(0.05)
        path.write_text(
            json.dumps(
                [
                    {"name": "from-file", "url": b.url, "event_types": ["RunSucceeded"]},
                    {"name": "second", "url": a.url, "format": "kfp", "enabled": False},
                ]
            )
        )
        wait_for("the reload", lambda: names().get("from-file", {}).get("url") == b.url)
        assert set(names()) == {"from-file", "second"}
        finish_runs(store, s, "fan", n=2)
        wait_for("delivery to the new URL", lambda: b.ok_requests())
        # a broken file is reported and changes nothing
        caplog.set_level("ERROR", logger="ferryman.engine.event_deliverer.loop")
        path.write_text("- name: x\n  url: not-a-url\n  colour: blue\n")
        wait_for("the error", lambda: "not applied" in caplog.text)
        assert "url" in caplog.text and "colour" in caplog.text
        assert set(names()) == {"from-file", "second"}
        path.write_text("[]\n")
        wait_for("removal", lambda: not names())


def test_formats_are_pluggable_through_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib.metadata import EntryPoint

    from ferryman.notify import formats as registry

    class Upper:
        name = "upper"

        def accepts(self, event_type: str) -> bool:
            return event_type.startswith("Run")

        def render(self, event: dict[str, Any], ctx: registry.FormatContext) -> dict[str, Any]:
            return {"TYPE": event["type"].upper()}

    monkeypatch.setattr(f"{__name__}.Upper", Upper, raising=False)
    ep = EntryPoint("upper", f"{__name__}:Upper", registry.ENTRY_POINT_GROUP)
    broken = EntryPoint("broken", "no_such_module_xyz:Thing", registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group: [ep, broken])
    monkeypatch.setattr(registry, "_formats", None)
    known = registry.formats()
    assert {"ferryman", "kfp", "slack", "teams", "upper"} <= set(known)
    assert "broken" not in known
    fmt = registry.get_format("upper")
    assert fmt.render({"type": "RunFailed"}, registry.FormatContext()) == {"TYPE": "RUNFAILED"}
    spec = subs.SubscriptionCreate(name="u", url="http://127.0.0.1:1/", format="upper")
    assert spec.format == "upper"
    monkeypatch.setattr(registry, "_formats", None)

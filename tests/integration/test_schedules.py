"""Schedules on SQLite and PostgreSQL: the scheduler fires on time, never
twice (several schedulers, restarts, pause/resume, edits), catches up by
policy after a simulated downtime (a ManualClock, no sleeps), and enforces
the overlap policies. Runs are never executed here (no worker): a queued
run is an active run."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from ferryman.domain.schedules import Overlap
from ferryman.domain.states import RunState
from ferryman.dsl.loader import load_pipeline
from ferryman.engine.clock import ManualClock
from ferryman.engine.scheduler import Scheduler
from ferryman.errors import Conflict, InvalidInput
from ferryman.services import schedules as svc
from ferryman.services.catalog import register
from ferryman.services.runs import RunService
from ferryman.services.ticks import Ticks
from ferryman.settings import Settings
from ferryman.store.engine import Store
from ferryman.store.tables import events, runs, schedule_ticks, schedules

PIPES = Path(__file__).parent.parent / "pipelines" / "basic.py"
T0 = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def deploy(store: Store, name: str = "fan") -> None:
    with store.write() as conn:
        register(conn, "default", load_pipeline(f"{PIPES}:{name}"))


def make(store: Store, now: dt.datetime = T0, **kw: Any) -> svc.Schedule:
    raw = {"name": "nightly", "pipeline": "fan", "interval": 60, **kw}
    return svc.create(store, "default", svc.parse_spec(raw), now=now)


def at(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def scheduled_runs(store: Store) -> list[Any]:
    with store.read() as conn:
        return list(conn.execute(sa.select(runs).order_by(runs.c.created_at, runs.c.id)))


def tick_rows(store: Store, state: str | None = None) -> list[Any]:
    q = sa.select(schedule_ticks).order_by(schedule_ticks.c.fire_time)
    if state:
        q = q.where(schedule_ticks.c.state == state)
    with store.read() as conn:
        return list(conn.execute(q))


def event_types(store: Store) -> list[str]:
    with store.read() as conn:
        return [r.type for r in conn.execute(sa.select(events.c.type).order_by(events.c.seq))]


def finish_all(store: Store) -> None:
    """End every active run (as a worker would): the overlap policies see it."""
    with store.write() as conn:
        conn.execute(
            sa.update(runs)
            .where(runs.c.state.in_(["queued", "running"]))
            .values(state=RunState.SUCCEEDED.value)
        )


@pytest.fixture
def ticks(store: Store) -> Ticks:
    deploy(store)
    return Ticks(store, late_after=60)


def test_fires_each_tick_once_with_labels_and_origin(store: Store, ticks: Ticks) -> None:
    make(store, overlap="allow")
    assert ticks.run_due(at(0.5)).fired == 0
    r = ticks.run_due(at(1))
    assert r.fired == 1 and r.next_due == at(2)
    assert ticks.run_due(at(1)).fired == 0  # the same moment again: nothing
    (run,) = scheduled_runs(store)
    assert run.labels["ferryman.schedule"] == "nightly"
    assert run.labels["ferryman.tick"] == at(1).isoformat()
    assert run.trigger == {"kind": "schedule", "schedule": "nightly", "tick": at(1).isoformat()}
    assert run.params == {"n": 10, "shards": 3}
    (tick,) = tick_rows(store)
    assert (tick.state, tick.run_id, tick.kind) == ("fired", run.id, "schedule")


def test_two_schedulers_at_once_fire_each_tick_once(store: Store, settings: Settings) -> None:
    deploy(store)
    make(store, interval=1, overlap="allow")
    other = Store.from_settings(settings)
    try:
        a, b = Ticks(store, late_after=600), Ticks(other, late_after=600)
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def go(t: Ticks) -> None:
            try:
                for i in range(1, 31):
                    barrier.wait()
                    t.run_due(T0 + dt.timedelta(seconds=i))
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=go, args=(t,)) for t in (a, b)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(60)
        assert not errors
    finally:
        other.dispose()
    fired = tick_rows(store, "fired")
    assert [t.fire_time for t in fired] == [T0 + dt.timedelta(seconds=i) for i in range(1, 31)]
    assert len(scheduled_runs(store)) == 30
    assert len({t.run_id for t in fired}) == 30


def test_pause_and_resume_never_backfill(store: Store, ticks: Ticks) -> None:
    make(store, overlap="allow", catchup="all")
    ticks.run_due(at(1))
    svc.update(store, "default", "nightly", {"paused": True}, now=at(1.5))
    assert ticks.run_due(at(5)).fired == 0
    svc.update(store, "default", "nightly", {"paused": False}, now=at(5.5))
    assert ticks.run_due(at(5.5)).fired == 0
    assert ticks.run_due(at(6)).fired == 1
    assert [t.fire_time for t in tick_rows(store)] == [at(1), at(6)]
    assert "ScheduleTickMissed" not in event_types(store)


def test_editing_the_timing_never_backfills_or_double_fires(store: Store, ticks: Ticks) -> None:
    make(store, overlap="allow", catchup="all")
    ticks.run_due(at(1))
    # every 30 s from now: 00:30 and 01:00 are past, 01:00 already fired
    svc.update(store, "default", "nightly", {"interval": 30}, now=at(1.2))
    assert ticks.run_due(at(1.2)).fired == 0
    assert ticks.run_due(at(1.5)).fired == 1
    assert [t.fire_time for t in tick_rows(store)] == [at(1), at(1.5)]


@pytest.mark.parametrize(
    ("policy", "fired", "missed"),
    [("none", 0, 5), ("latest", 1, 4), ("all", 5, 0)],
)
def test_catchup_after_a_downtime(
    store: Store, ticks: Ticks, policy: str, fired: int, missed: int
) -> None:
    make(store, overlap="allow", catchup=policy)
    ticks.late_after = 10  # a tick due more than 10 s ago was missed
    # the scheduler was down from 0 to 5:30: ticks 1..5 are late
    r = ticks.run_due(at(5.5))
    assert (r.fired, r.missed) == (fired, missed)
    assert len(tick_rows(store, "missed")) == missed
    assert event_types(store).count("ScheduleTickMissed") == missed
    assert len(scheduled_runs(store)) == fired
    if policy == "latest":
        assert scheduled_runs(store)[0].labels["ferryman.tick"] == at(5).isoformat()
    # and it goes on normally
    assert ticks.run_due(at(6)).fired == 1


def test_missed_event_reaches_the_events_table_with_the_schedule(
    store: Store, ticks: Ticks
) -> None:
    make(store, catchup="none")
    ticks.run_due(at(3.5))
    with store.read() as conn:
        ev = conn.execute(
            sa.select(events).where(events.c.type == "ScheduleTickMissed").limit(1)
        ).one()
    assert ev.data["schedule"] == "nightly" and ev.data["tick"] == at(1).isoformat()
    assert ev.pipeline == "fan" and "catch-up policy 'none'" in ev.message


def test_overlap_skip(store: Store, ticks: Ticks) -> None:
    make(store, overlap="skip")
    assert ticks.run_due(at(1)).fired == 1
    r = ticks.run_due(at(2))  # the first run is still queued
    assert (r.fired, r.skipped) == (0, 1)
    assert "ScheduleTickSkipped" in event_types(store)
    finish_all(store)
    assert ticks.run_due(at(3)).fired == 1


def test_overlap_buffer_one(store: Store, ticks: Ticks) -> None:
    make(store, overlap="buffer_one")
    ticks.run_due(at(1))
    assert ticks.run_due(at(2)).buffered == 1
    assert ticks.run_due(at(3)).skipped == 1  # one is buffered already
    finish_all(store)
    r = ticks.run_due(at(3.5))
    assert r.fired == 1  # the buffered 00:02 starts now
    assert scheduled_runs(store)[-1].labels["ferryman.tick"] == at(2).isoformat()
    states = [(t.fire_time, t.state) for t in tick_rows(store)]
    assert states == [(at(1), "fired"), (at(2), "fired"), (at(3), "skipped")]


def test_overlap_buffer_all_starts_them_one_at_a_time(store: Store, ticks: Ticks) -> None:
    make(store, overlap="buffer_all")
    ticks.run_due(at(1))
    ticks.run_due(at(2))
    ticks.run_due(at(3))
    assert len(tick_rows(store, "buffered")) == 2
    for expected in (at(2), at(3)):
        finish_all(store)
        assert ticks.run_due(at(3.5)).fired == 1
        assert scheduled_runs(store)[-1].labels["ferryman.tick"] == expected.isoformat()
    assert tick_rows(store, "buffered") == []


def test_overlap_cancel_other(store: Store, ticks: Ticks) -> None:
    make(store, overlap="cancel_other")
    ticks.run_due(at(1))
    assert ticks.run_due(at(2)).fired == 1
    first, second = scheduled_runs(store)
    assert first.state == "cancelled" and second.state == "queued"


def test_run_now_and_backfill(store: Store, ticks: Ticks) -> None:
    make(store, overlap="skip", catchup="none")
    ticks.late_after = 10
    ticks.run_due(at(3.5))  # 1..3 missed
    run_id = ticks.run_now("default", "nightly", now=at(3.6))
    (run,) = scheduled_runs(store)
    assert run.id == run_id and run.trigger["kind"] == "manual"
    # missed ticks stay missed: a backfill decides only undecided ticks
    r = ticks.backfill("default", "nightly", at(-3), at(3), overlap=Overlap.ALLOW, now=at(3.7))
    assert r.fired == 3  # -2, -1, 0 were never decided (before the schedule existed)
    with pytest.raises(InvalidInput, match="must not be in the future"):
        ticks.backfill("default", "nightly", at(0), at(10), now=at(3.7))
    kinds = {t.kind for t in tick_rows(store, "fired")}
    assert kinds == {"manual", "backfill"}


def test_bad_schedules_are_refused_when_saved(store: Store, ticks: Ticks) -> None:
    with pytest.raises(InvalidInput, match="no pipeline 'nope'"):
        make(store, pipeline="nope")
    with pytest.raises(Exception, match="n"):
        make(store, params={"n": "many"})
    make(store)
    with pytest.raises(Conflict, match="already exists"):
        make(store)
    with pytest.raises(InvalidInput, match="cron"):
        svc.parse_spec({"name": "x", "pipeline": "fan", "cron": "every day"})


def test_a_tick_that_cannot_start_is_recorded_failed(store: Store, ticks: Ticks) -> None:
    deploy(store, "rerunnable")
    sched = make(store, pipeline="rerunnable", params={"flag": "x"})
    with store.write() as conn:  # as if the pipeline had gained a required parameter
        stored = sched.spec.model_dump(mode="json", exclude={"paused"})
        conn.execute(
            sa.update(schedules)
            .where(schedules.c.id == sched.id)
            .values(spec={**stored, "params": {}})
        )
    r = ticks.run_due(at(1))
    assert (r.fired, r.failed) == (0, 1)
    (tick,) = tick_rows(store)
    assert tick.state == "failed" and "flag" in tick.reason
    assert "ScheduleTickFailed" in event_types(store)
    assert scheduled_runs(store) == []


def test_scheduler_loop_with_a_manual_clock(store: Store, settings: Settings) -> None:
    deploy(store)
    clock = ManualClock(T0)
    make(store, interval=5, overlap="allow")
    loop = Scheduler(store, settings, clock=clock)
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    try:
        for i in range(1, 4):
            clock.wait_for_sleepers(1)
            clock.advance(5)
            # real time for the turn: generous, the machine may be loaded
            deadline = time.monotonic() + 30
            while len(scheduled_runs(store)) < i and time.monotonic() < deadline:
                time.sleep(0.02)
            assert len(scheduled_runs(store)) == i
    finally:
        loop.stop()
        thread.join(10)
    assert [t.fire_time for t in tick_rows(store)] == [
        T0 + dt.timedelta(seconds=5 * i) for i in range(1, 4)
    ]


def test_run_service_is_the_one_creation_path(store: Store, ticks: Ticks) -> None:
    """Scheduled runs are ordinary runs: re-runs and cancels work on them."""
    make(store, overlap="allow")
    ticks.run_due(at(1))
    (run,) = scheduled_runs(store)
    RunService(store).cancel(run.id)
    assert scheduled_runs(store)[0].state == "cancelled"


def test_subscribers_receive_missed_ticks(
    store: Store, ticks: Ticks, settings: Settings, receivers: Any
) -> None:
    """A missed tick is an event like any other: a subscription to
    ``ScheduleTickMissed`` gets it, signed, through the event deliverer."""
    from test_subscriptions import fast, subscribe

    from ferryman.engine.event_deliverer import EventDeliverer

    rec = receivers()
    subscribe(store, "missed", rec.url, event_types=["ScheduleTickMissed"])
    make(store, catchup="none")
    ticks.late_after = 10
    ticks.run_due(at(2.5))  # ticks 1 and 2 missed
    EventDeliverer(store, fast(settings)).run_until_idle(timeout=30)
    bodies = [json.loads(r.body) for r in rec.requests]
    assert [b["type"] for b in bodies] == ["ScheduleTickMissed", "ScheduleTickMissed"]
    assert [b["data"]["tick"] for b in bodies] == [at(1).isoformat(), at(2).isoformat()]
    assert all(b["data"]["schedule"] == "nightly" for b in bodies)


def test_one_broken_schedule_does_not_hold_up_the_others(
    store: Store, ticks: Ticks, caplog: pytest.LogCaptureFixture
) -> None:
    broken = make(store, name="broken", overlap="allow")
    make(store, name="fine", overlap="allow")
    with store.write() as conn:  # a row no version of ferryman could have written
        conn.execute(
            sa.update(schedules).where(schedules.c.id == broken.id).values(spec={"cron": 5})
        )
    r = ticks.run_due(at(1))
    assert r.fired == 1
    assert [run.labels["ferryman.schedule"] for run in scheduled_runs(store)] == ["fine"]
    assert "schedule default/broken: its ticks were not decided" in caplog.text

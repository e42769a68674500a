"""Acceptance: three ``ferryman server`` processes on one PostgreSQL fire a
1-second interval schedule and two cron schedules while servers are killed
with SIGKILL at random (and restarted) for about a minute: every tick is
fired exactly once (one ``schedule_ticks`` row, one run, no gap), none is
missed (the catch-up policy is ``all``).

The servers run without a worker (``--no-worker``): runs stay queued, which
is all this test needs to count, and keeps the two shared cores for the
schedulers.
"""

from __future__ import annotations

import datetime as dt
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from test_server_restart import Server, server_env, wait_for

from ferryman.domain.schedules import next_ticks
from ferryman.dsl.loader import load_pipeline
from ferryman.services import schedules as svc
from ferryman.services.catalog import register
from ferryman.store.engine import Store
from ferryman.store.tables import metadata, runs, schedule_ticks, schedules

__all__ = ["server_env"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.timeout(300),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux process tools"),
]

PIPES = Path(__file__).parent.parent / "pipelines" / "basic.py"
CHAOS_SECONDS = 60.0
SCHEDULES = [
    {"name": "every-second", "interval": 1},
    {"name": "every-5s-cron", "cron": "*/5 * * * * *", "timezone": "Europe/London"},
    {"name": "every-minute", "cron": "* * * * *", "timezone": "Asia/Kolkata"},
]


def _fresh(url: str) -> Store:
    store = Store(url)
    names = ", ".join(t.name for t in reversed(metadata.sorted_tables))
    with store.engine.begin() as c:
        c.exec_driver_sql(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
    return store


def test_three_servers_kill9_every_tick_fired_exactly_once(
    server_env: Callable[..., Server], pg_database: str
) -> None:
    store = _fresh(pg_database)
    try:
        with store.write() as conn:
            register(conn, "default", load_pipeline(f"{PIPES}:fan"))
        for raw in SCHEDULES:
            spec = svc.parse_spec({"pipeline": "fan", "overlap": "allow", "catchup": "all",
                                   "max_catchup": 1000, "catchup_window": 3600, **raw})  # fmt: skip
            svc.create(store, "default", spec)
        env = {
            "FERRYMAN_DATABASE_URL": pg_database,
            "FERRYMAN_ADMIN_PASSWORD": "acceptance-admin-pw",
            "FERRYMAN_SCHEDULER_POLL_SECONDS": "0.5",
        }
        servers = [server_env(**env) for _ in range(3)]
        for s in servers:
            s.start("--no-worker")
        for s in servers:
            s.wait_healthy(60)
        rng = random.Random(13)
        kills = 0
        end = time.monotonic() + CHAOS_SECONDS
        while time.monotonic() < end:
            time.sleep(rng.uniform(2.0, 6.0))
            victim = rng.choice(servers)
            if victim.proc is not None and victim.proc.poll() is None:
                victim.kill9()
                kills += 1
            # sometimes two are down at once; sometimes all three for a moment
            if rng.random() < 0.3:
                time.sleep(rng.uniform(1.0, 3.0))
            for s in servers:
                down = s.proc is None or s.proc.poll() is not None
                if down and rng.random() < 0.7:
                    s.start("--no-worker")
        for s in servers:
            if s.proc is None or s.proc.poll() is not None:
                s.start("--no-worker")
        stop_at = dt.datetime.now(dt.UTC)

        def caught_up() -> bool:
            with store.read() as conn:
                cursors = [r.cursor for r in conn.execute(sa.select(schedules.c.cursor))]
            return all(c >= stop_at for c in cursors)

        wait_for("the schedulers to catch up", caught_up, 90,
                 lambda: [s.check() for s in servers] and None)  # fmt: skip
        for s in servers:
            s.terminate()
        assert kills >= 8

        with store.read() as conn:
            rows = {r.id: r for r in conn.execute(sa.select(schedules))}
            ticks = list(conn.execute(sa.select(schedule_ticks)))
            run_rows = list(conn.execute(sa.select(runs.c.id, runs.c.labels)))
        by_schedule: dict[str, list[dt.datetime]] = {}
        for t in ticks:
            assert t.state == "fired", (t.fire_time, t.state, t.reason)
            by_schedule.setdefault(rows[t.schedule_id].name, []).append(t.fire_time)
        # one run per tick, and no run without its tick
        assert len(run_rows) == len(ticks)
        assert len({t.run_id for t in ticks}) == len(ticks)
        labelled = Counter(
            (r.labels["ferryman.schedule"], r.labels["ferryman.tick"]) for r in run_rows
        )
        assert max(labelled.values()) == 1
        for row in rows.values():
            sched = svc.from_row(row)
            fired = sorted(by_schedule.get(sched.name, []))
            # every tick from the schedule's creation up to its cursor, no gap
            expected = [t for t in next_ticks(sched.spec, row.created_at, 10_000)
                        if t <= row.cursor]  # fmt: skip
            assert fired == expected, sched.name
        assert len(by_schedule["every-second"]) >= CHAOS_SECONDS
        print(f"\n{kills} kills; ticks fired: "
              + ", ".join(f"{k}={len(v)}" for k, v in sorted(by_schedule.items())))  # fmt: skip
    finally:
        store.dispose()

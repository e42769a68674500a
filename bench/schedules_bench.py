"""Scheduler benchmarks (issue 13). Not a test: prints a table.

    .venv/bin/python bench/schedules_bench.py            # SQLite + PostgreSQL
    .venv/bin/python bench/schedules_bench.py --no-pg

Figures:
- **fire delay** (a tick's due time → its run queued, ``runs.created_at``):
  p50, p99 and max over 200 ticks (10 one-second schedules staggered by
  0.1 s, one real-clock ``Scheduler`` loop in this process, 20 s);
- **1,000 schedules due in the same second**: how long after the due time
  the last run was created, and duplicates (ticks vs runs vs distinct
  ticks); once with one scheduler, once (PostgreSQL) with three
  ``ferryman scheduler`` processes;
- **idle cost**: CPU seconds per minute of one ``ferryman scheduler``
  process with 1,000 paused and 1,000 active schedules (none due).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

from ferryman.domain.schedules import ScheduleSpec
from ferryman.domain.spec import FunctionRef, PipelineSpec, PythonStep
from ferryman.engine.scheduler import Scheduler
from ferryman.services.catalog import register
from ferryman.services.schedules import insert
from ferryman.settings import Settings
from ferryman.store.engine import Store
from ferryman.store.tables import runs, schedule_ticks

HERE = Path(__file__).resolve().parent
PG_URL = os.environ.get(
    "FERRYMAN_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/ferryman_sched_bench"
)
UTC = dt.UTC


def spec() -> PipelineSpec:
    noop = FunctionRef(file=str(HERE / "steps.py"), qualname="noop")
    return PipelineSpec(
        name="tick", steps=[PythonStep(name="a", function=noop, infrastructure="inline")]
    )


def fresh(url: str) -> Store:
    if url.startswith("postgresql"):
        admin = sa.create_engine(
            Store(PG_URL.rsplit("/", 1)[0] + "/postgres").url, isolation_level="AUTOCOMMIT"
        )
        name = url.rsplit("/", 1)[1]
        with admin.connect() as c:
            c.exec_driver_sql(
                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname='{name}'"
            )
            c.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
            c.exec_driver_sql(f"CREATE DATABASE {name}")
        admin.dispose()
    store = Store(url)
    store.prepare_schema()
    with store.write() as conn:
        register(conn, "default", spec())
    return store


def add_schedules(store: Store, specs: list[dict[str, Any]], now: dt.datetime) -> None:
    """Insert many schedules in a few transactions (the services' insert)."""
    for i in range(0, len(specs), 200):
        with store.write() as conn:
            for raw in specs[i : i + 200]:
                insert(conn, "default", ScheduleSpec.model_validate(raw), "api", None, now)


def settings_for(url: str, home: Path) -> Settings:
    return Settings(home=home, database_url=url, scheduler_poll_seconds=1.0)


def fire_delay(url: str, home: Path) -> dict[str, float]:
    store = fresh(url)
    now = dt.datetime.now(UTC)
    base = now.replace(microsecond=0) + dt.timedelta(seconds=2)
    add_schedules(store, [
        {"name": f"s{i}", "pipeline": "tick", "interval": 1, "overlap": "allow",
         "start_at": (base + dt.timedelta(seconds=i / 10)).isoformat()}
        for i in range(10)
    ], now)  # fmt: skip
    loop = Scheduler(store, settings_for(url, home))
    t = threading.Thread(target=loop.run, daemon=True)
    t.start()
    time.sleep(22.5)
    loop.stop()
    t.join(10)
    with store.read() as conn:
        rows = conn.execute(
            sa.select(schedule_ticks.c.fire_time, runs.c.created_at).join(
                runs, runs.c.id == schedule_ticks.c.run_id
            )
        ).all()
    store.dispose()
    delays = sorted((r.created_at - r.fire_time).total_seconds() for r in rows)[:200]
    return {
        "n": len(delays),
        "p50": statistics.median(delays),
        "p99": delays[int(len(delays) * 0.99) - 1],
        "max": delays[-1],
    }


def scheduler_proc(url: str, home: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERRYMAN_")}
    env.update(FERRYMAN_DATABASE_URL=url, FERRYMAN_HOME=str(home),
               FERRYMAN_SCHEDULER_POLL_SECONDS="1")  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-m", "ferryman", "scheduler", "--log-level", "WARNING"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def thousand_due(url: str, home: Path, schedulers: int) -> dict[str, float]:
    store = fresh(url)
    now = dt.datetime.now(UTC)
    due = now.replace(microsecond=0) + dt.timedelta(seconds=25)
    add_schedules(store, [
        {"name": f"s{i}", "pipeline": "tick", "interval": 86400, "overlap": "allow",
         "start_at": due.isoformat()}
        for i in range(1000)
    ], now)  # fmt: skip
    procs = [scheduler_proc(url, home) for _ in range(schedulers)]
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with store.read() as conn:
                n = conn.execute(sa.select(sa.func.count()).select_from(runs)).scalar_one()
            if n >= 1000 and dt.datetime.now(UTC) > due + dt.timedelta(seconds=5):
                break
            time.sleep(0.5)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
    with store.read() as conn:
        n_runs = conn.execute(sa.select(sa.func.count()).select_from(runs)).scalar_one()
        n_ticks = conn.execute(sa.select(sa.func.count()).select_from(schedule_ticks)).scalar_one()
        distinct = conn.execute(
            sa.select(sa.func.count()).select_from(
                sa.select(schedule_ticks.c.schedule_id, schedule_ticks.c.fire_time)
                .distinct()
                .subquery()
            )
        ).scalar_one()
        last = conn.execute(sa.select(sa.func.max(runs.c.created_at))).scalar_one()
    store.dispose()
    return {
        "runs": n_runs,
        "duplicates": (n_runs - distinct) + (n_ticks - distinct),
        "last_after_due": (last - due).total_seconds() if last else float("nan"),
    }


def idle_cost(url: str, home: Path, seconds: float = 60.0) -> float:
    store = fresh(url)
    now = dt.datetime.now(UTC)
    add_schedules(store, [
        {"name": f"p{i}", "pipeline": "tick", "cron": "0 3 * * *", "paused": True}
        for i in range(1000)
    ] + [
        {"name": f"a{i}", "pipeline": "tick", "cron": "0 3 1 1 *", "timezone": "Asia/Kolkata"}
        for i in range(1000)
    ], now)  # fmt: skip
    store.dispose()
    proc = scheduler_proc(url, home)
    try:
        time.sleep(5)  # start-up is not idle
        ps = psutil.Process(proc.pid)
        before = ps.cpu_times()
        time.sleep(seconds)
        after = ps.cpu_times()
    finally:
        proc.terminate()
        proc.wait(30)
    used = (after.user - before.user) + (after.system - before.system)
    return used * 60.0 / seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-pg", action="store_true")
    ap.add_argument("--idle-seconds", type=float, default=60.0)
    args = ap.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        targets = [("SQLite", f"sqlite:///{home}/bench.db")]
        if not args.no_pg:
            targets.append(("PostgreSQL", PG_URL))
        t = Table(title="scheduler")
        for col in ("database", "figure", "value"):
            t.add_column(col)
        for label, url in targets:
            if url.startswith("sqlite"):
                Path(url.removeprefix("sqlite:///")).unlink(missing_ok=True)
            d = fire_delay(url, home)
            t.add_row(label, f"fire delay over {d['n']:.0f} ticks: p50 / p99 / max (s)",
                      f"{d['p50']:.3f} / {d['p99']:.3f} / {d['max']:.3f}")  # fmt: skip
            counts = [1] if url.startswith("sqlite") else [1, 3]
            for n in counts:
                if url.startswith("sqlite"):
                    Path(url.removeprefix("sqlite:///")).unlink(missing_ok=True)
                r = thousand_due(url, home, n)
                t.add_row(label, f"1,000 due at once, {n} scheduler(s): last run after due (s)",
                          f"{r['last_after_due']:.2f}")  # fmt: skip
                t.add_row(label, f"1,000 due at once, {n} scheduler(s): runs / duplicates",
                          f"{r['runs']} / {r['duplicates']}")  # fmt: skip
            if url.startswith("sqlite"):
                Path(url.removeprefix("sqlite:///")).unlink(missing_ok=True)
            cpu = idle_cost(url, home, args.idle_seconds)
            t.add_row(label, "idle: CPU s per minute (1,000 paused + 1,000 active)",
                      f"{cpu:.3f}")  # fmt: skip
        console.print(t)
    print(f"load average: {os.getloadavg()}", file=sys.stderr)


if __name__ == "__main__":
    main()

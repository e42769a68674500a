"""REST API benchmarks (issue: the ferryman server). Not a test: prints a table.

    .venv/bin/python bench/api_bench.py            # SQLite + PostgreSQL
    .venv/bin/python bench/api_bench.py --no-pg
    .venv/bin/python bench/api_bench.py --no-pg --launches 0 --runs 0   # creations only

Figures, each against a real ``ferryman server`` process on 127.0.0.1:
- run creations per second over HTTP from one sequential client and from 16
  concurrent requests (SQLite and PostgreSQL), counting errors and 5xx, and
  their latency (p50, p99, max);
- ``GET /runs?state=succeeded&limit=50`` p50/p95 latency with 100,000 runs
  in the database (PostgreSQL);
- time from launching ``ferryman server`` to ``/health`` answering 200, and
  the server's idle RSS.
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil
from rich.console import Console
from rich.table import Table

from ferryman.domain.spec import FunctionRef, PipelineSpec, PythonStep

HERE = Path(__file__).resolve().parent
PG_URL = os.environ.get(
    "FERRYMAN_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/ferryman_api_bench"
)
PASSWORD = "bench-password-123"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spec() -> PipelineSpec:
    noop = FunctionRef(file=str(HERE / "steps.py"), qualname="noop")
    return PipelineSpec(
        name="api-bench",
        steps=[PythonStep(name="a", function=noop, infrastructure="inline")],
    )


def reset_pg() -> None:
    import sqlalchemy as sa

    url = sa.make_url(PG_URL.replace("postgresql://", "postgresql+psycopg://", 1))
    admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:  # a database of its own, created on first use
        if not c.exec_driver_sql(
            "SELECT 1 FROM pg_database WHERE datname = %s", (url.database,)
        ).first():
            c.exec_driver_sql(f'CREATE DATABASE "{url.database}"')
    admin.dispose()
    eng = sa.create_engine(url)
    with eng.begin() as c:  # every table, whatever the schema revision
        c.exec_driver_sql("DROP SCHEMA public CASCADE")
        c.exec_driver_sql("CREATE SCHEMA public")
    eng.dispose()


@contextmanager
def server(db_url: str, home: Path, *, no_worker: bool = True) -> Iterator[tuple[str, float, Any]]:
    port = free_port()
    env = {
        **os.environ,
        "FERRYMAN_HOME": str(home),
        "FERRYMAN_DATABASE_URL": db_url,
        "FERRYMAN_ADMIN_PASSWORD": PASSWORD,
        "FERRYMAN_PORT": str(port),
    }
    args = [sys.executable, "-m", "ferryman", "server", "--port", str(port)]
    if no_worker:
        args.append("--no-worker")
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        # A cheap probe (http.client, no TLS context per attempt as httpx.get
        # would build): the poller must not steal the CPU the server starts on.
        while not _health_ok(port):
            if proc.poll() is not None:
                raise SystemExit("the server exited during start-up")
            time.sleep(0.005)
        startup = time.perf_counter() - t0
        yield base, startup, proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def _health_ok(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def startup_times(db_url: str, n: int) -> list[float]:
    """Launch → /health 200, ``n`` times on a fresh home and database each."""
    times = []
    for _ in range(n):
        with tempfile.TemporaryDirectory() as tmp:
            url = db_url if db_url.startswith("postgresql") else f"sqlite:///{tmp}/ferryman.db"
            if url.startswith("postgresql"):
                reset_pg()
            with server(url, Path(tmp)) as (_base, startup, _proc):
                times.append(startup)
    return times


def login(base: str) -> dict[str, str]:
    r = httpx.post(f"{base}/token", data={"username": "admin", "password": PASSWORD})
    r.raise_for_status()
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def bench_creates(
    base: str, headers: dict[str, str], n: int, concurrency: int
) -> tuple[float, int, int, list[float]]:
    """Creations per second, errors, 5xx and each request's latency (s)."""
    url = f"{base}/namespaces/default/pipelines/api-bench/runs"
    errors = 0
    fives = 0

    def one(client: httpx.Client) -> tuple[int, float]:
        t = time.perf_counter()
        code = client.post(url, json={"params": {}}, headers=headers).status_code
        return code, time.perf_counter() - t

    with httpx.Client(timeout=30, limits=httpx.Limits(max_connections=concurrency)) as client:
        t0 = time.perf_counter()
        if concurrency == 1:
            results = [one(client) for _ in range(n)]
        else:
            with ThreadPoolExecutor(concurrency) as pool:
                results = list(pool.map(lambda _: one(client), range(n)))
        secs = time.perf_counter() - t0
    for c, _ in results:
        if c != 201:
            errors += 1
        if c >= 500:
            fives += 1
    return n / secs, errors, fives, [t for _, t in results]


def percentile(xs: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``xs``, nearest rank."""
    ordered = sorted(xs)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def seed_runs(db_url: str, n: int) -> None:
    """Insert ``n`` finished runs straight into the database (setup, not measured)."""
    import datetime as dt

    import sqlalchemy as sa

    from ferryman.services.catalog import register
    from ferryman.store.engine import Store
    from ferryman.store.tables import new_id, runs

    store = Store(db_url)
    with store.write() as conn:
        pv = register(conn, "default", spec())
    now = dt.datetime.now(dt.UTC)
    states = ["succeeded", "failed", "cancelled", "succeeded"]
    batch = []
    for i in range(n):
        batch.append({
            "id": new_id(), "name": f"seed-run-{i}", "namespace": "default", "pipeline": pv.name,
            "pipeline_version_id": pv.id, "version": pv.version, "state": states[i % 4],
            "params": {}, "labels": {"i": str(i % 10)}, "nodes_total": 1, "nodes_remaining": 0,
            "cancel_requested": False, "options": {}, "created_at": now, "updated_at": now,
            "started_at": now, "ended_at": now,
        })  # fmt: skip
        if len(batch) == 5000:
            with store.write() as conn:
                conn.execute(sa.insert(runs), batch)
            batch = []
    if batch:
        with store.write() as conn:
            conn.execute(sa.insert(runs), batch)
    if store.is_postgres:  # what autovacuum does after a bulk load: fresh planner statistics
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ANALYZE runs")
    store.dispose()


def bench_list(base: str, headers: dict[str, str], n: int = 200) -> tuple[float, float]:
    lat = []
    with httpx.Client(timeout=30) as client:
        for _ in range(10):  # warm-up
            client.get(f"{base}/runs", params={"state": "succeeded", "limit": 50}, headers=headers)
        for _ in range(n):
            t0 = time.perf_counter()
            r = client.get(
                f"{base}/runs", params={"state": "succeeded", "limit": 50}, headers=headers
            )
            lat.append(time.perf_counter() - t0)
            assert r.status_code == 200 and len(r.json()["items"]) == 50
    lat.sort()
    return statistics.median(lat) * 1000, lat[int(len(lat) * 0.95)] * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-pg", action="store_true")
    ap.add_argument("--creates", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=100_000, help="0 skips the list benchmark")
    ap.add_argument("--launches", type=int, default=7, help="start-up measurements per database")
    args = ap.parse_args()
    rows: list[tuple[str, ...]] = []
    backends = [("SQLite", None)] + ([] if args.no_pg else [("PostgreSQL", PG_URL)])
    for label, url in backends:
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp)
            db = url or f"sqlite:///{home}/ferryman.db"
            if url:
                reset_pg()
            starts = sorted(startup_times(db, args.launches))
            if starts:
                rows.append((
                    f"server start → /health 200 ({label}), {len(starts)} launches",
                    f"median {statistics.median(starts) * 1000:.0f} ms "
                    f"(min {starts[0] * 1000:.0f}, max {starts[-1] * 1000:.0f})", "< 1 s",
                ))  # fmt: skip
            if url:
                reset_pg()
            with server(db, home) as (base, _startup, proc):
                headers = login(base)
                r = httpx.post(f"{base}/namespaces/default/pipelines",
                               json=spec().model_dump(mode="json"), headers=headers)  # fmt: skip
                r.raise_for_status()
                time.sleep(1.0)
                rss = psutil.Process(proc.pid).memory_info().rss / 2**20
                rows.append((f"idle RSS of ferryman server ({label})", f"{rss:.0f} MiB",
                             "< 120 MiB"))  # fmt: skip
                for conc in (1, 16):
                    rate, errs, fives, lat = bench_creates(base, headers, args.creates, conc)
                    rows.append((
                        f"run creations/s, {'sequential' if conc == 1 else '16 concurrent'} "
                        f"({label})", f"{rate:.0f}/s ({errs} errors, {fives} 5xx)",
                        "≥ 120/s, no 5xx",
                    ))  # fmt: skip
                    rows.append((
                        f"creation latency, {'sequential' if conc == 1 else '16 concurrent'} "
                        f"({label})",
                        f"p50 {percentile(lat, 0.5) * 1000:.0f} ms, "
                        f"p99 {percentile(lat, 0.99) * 1000:.0f} ms, "
                        f"max {max(lat) * 1000:.0f} ms",
                        "p99 < 100 ms (16 concurrent)",
                    ))  # fmt: skip
            if url and args.runs:
                seed_runs(db, args.runs)
                with server(db, home) as (base, _s, _p):
                    headers = login(base)
                    p50, p95 = bench_list(base, headers)
                    rows.append((
                        f"GET /runs?state=…&limit=50, {args.runs:,} runs ({label})",
                        f"p50 {p50:.1f} ms, p95 {p95:.1f} ms", "p95 < 50 ms",
                    ))  # fmt: skip
    table = Table(title=f"ferryman API benchmarks — {time.strftime('%Y-%m-%d')}")
    for col in ("benchmark", "result", "target"):
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    Console().print(table)


if __name__ == "__main__":
    main()

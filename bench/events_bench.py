"""Event delivery benchmarks (issue 4). Not a test: prints tables.

    .venv/bin/python bench/events_bench.py fanout            # PostgreSQL
    .venv/bin/python bench/events_bench.py fanout --sqlite   # SQLite
    .venv/bin/python bench/events_bench.py engine            # engine cost of the outbox hook

fanout: 10 subscribers (one async HTTP receiver process on loopback, one
path per subscriber) and a deliverer in its own process, as in a server
(SQLite: in the producing process, woken in-process, as in the embedded server).

- burst: 1,000 run creations of a 9-root-step pipeline = 10,000 events
  (RunQueued + 9 NodeQueued per transaction, through the real transition
  gate) = 100,000 deliveries, as fast as one process can create them;
  throughput = deliveries / (last arrival - first commit), and every
  delivery is counted at the receiver (unique webhook-id per subscriber);
- latency: one-step runs created at a sub-saturating rate (2 events per
  transaction, 20 per subscriber-second at the default rate); latency = the
  POST's arrival minus the event's time (the start of its transaction),
  p50 / p99;
- both again with one of the 10 subscribers hanging (never answers; the
  deliverer's timeout cuts it off), counting the 9 healthy ones.

engine: the 1,000-step chain and fan-out of bench/engine_bench.py, embedded,
with no subscriber and with one subscriber to every event (queueing only).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

from ferryman.domain.spec import FunctionRef, PipelineSpec, PythonStep
from ferryman.services import subscriptions as subs
from ferryman.services.catalog import register
from ferryman.services.runs import RunService
from ferryman.settings import Settings
from ferryman.store.engine import Store
from ferryman.store.migrate import upgrade
from ferryman.store.tables import events

HERE = Path(__file__).resolve().parent
NOOP = FunctionRef(file=str(HERE / "steps.py"), qualname="noop")
PG_URL = os.environ.get("FERRYMAN_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
SUBSCRIBERS = 10
console = Console(width=200)


# -- the receiver: a minimal asyncio HTTP/1.1 server (its own process) -----------------------


async def _receiver(port: int) -> None:
    arrivals: list[tuple[str, str, float]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                now = time.time()
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                n = int(headers.get("content-length", "0"))
                if n:
                    await reader.readexactly(n)
                if path.startswith("/hang"):
                    await asyncio.sleep(3600)
                if method == "GET" and path == "/count":
                    body = str(len(arrivals)).encode()
                elif method == "GET" and path == "/dump":
                    body = json.dumps(arrivals).encode()
                elif method == "POST" and path == "/reset":
                    arrivals.clear()
                    body = b"ok"
                else:
                    arrivals.append((path, headers.get("webhook-id", ""), now))
                    body = b"ok"
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _deliverer_main(url: str, home: str) -> None:
    import logging

    from ferryman.engine.event_deliverer import EventDeliverer

    logging.basicConfig(level=logging.ERROR)
    settings = Settings(home=Path(home), database_url=url, delivery_timeout=2.0)
    store = Store.from_settings(settings)
    d = EventDeliverer(store, settings)
    signal.signal(signal.SIGTERM, lambda *_: d.stop())
    d.run()


# -- the fan-out benchmark ---------------------------------------------------------------------


def roots(k: int) -> PipelineSpec:
    return PipelineSpec(
        name=f"roots{k}",
        steps=[PythonStep(name=f"s{i}", function=NOOP, infrastructure="inline") for i in range(k)],
    )


def fresh_db(sqlite: bool, tmp: Path) -> str:
    if sqlite:
        return f"sqlite:///{tmp}/events.db"
    admin = sa.create_engine(Store(PG_URL).url, isolation_level="AUTOCOMMIT")
    name = f"fm_evbench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as c:
        c.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()
    return str(sa.make_url(PG_URL).set(database=name).render_as_string(hide_password=False))


def drop_db(url: str) -> None:
    if url.startswith("sqlite"):
        return
    name = sa.make_url(url).database
    admin = sa.create_engine(Store(PG_URL).url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.exec_driver_sql(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname='{name}'"
        )
        c.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
    admin.dispose()


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(int(len(xs) * p), len(xs) - 1)] if xs else float("nan")


class Scenario:
    def __init__(self, sqlite: bool, hanging: bool) -> None:
        self.sqlite, self.hanging = sqlite, hanging
        self.tmp = Path(tempfile.mkdtemp())
        self.url = fresh_db(sqlite, self.tmp)
        self.settings = Settings(home=self.tmp, database_url=self.url)
        self.store = Store.from_settings(self.settings)
        upgrade(self.store)
        self.port = _free_port()
        self.procs: list[subprocess.Popen[bytes]] = []
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", trust_env=False)

    def __enter__(self) -> Scenario:
        me = str(Path(__file__).resolve())
        self.procs.append(subprocess.Popen([sys.executable, me, "receiver", str(self.port)]))
        for _ in range(100):
            try:
                self.http.get("/count")
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        with self.store.write() as conn:
            for i in range(SUBSCRIBERS):
                path = "/hang" if self.hanging and i == 0 else f"/s{i}"
                subs.create_subscription(
                    conn,
                    subs.SubscriptionCreate(
                        name=f"sub{i}", url=f"http://127.0.0.1:{self.port}{path}"
                    ),
                )
            self.pv = register(conn, "bench", roots(9))
            self.pv1 = register(conn, "bench", roots(1))
        if self.sqlite:
            # SQLite has no cross-process wake-up (LISTEN/NOTIFY): as in the
            # embedded server, the deliverer shares the process (and store)
            # of what makes the events, and is woken in-process.
            from ferryman.engine.event_deliverer import EventDeliverer

            s = Settings(home=self.tmp, database_url=self.url, delivery_timeout=2.0)
            self.deliverer = EventDeliverer(self.store, s)
            self.thread = threading.Thread(target=self.deliverer.run, daemon=True)
            self.thread.start()
        else:
            self.procs.append(
                subprocess.Popen([sys.executable, me, "deliverer", self.url, str(self.tmp)])
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self.sqlite:
            self.deliverer.stop()
            self.thread.join(30)
        for p in reversed(self.procs):
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        self.http.close()
        self.store.dispose()
        drop_db(self.url)

    def healthy(self) -> int:
        return SUBSCRIBERS - 1 if self.hanging else SUBSCRIBERS

    def create_runs(self, n: int, rate: float | None, pv: Any = None) -> None:
        svc = RunService(self.store)
        t0 = time.perf_counter()
        for i in range(n):
            svc.start_version(pv or self.pv, {})
            if rate:
                delay = t0 + (i + 1) / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)

    def wait_count(self, want: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        got = 0
        while time.monotonic() < deadline:
            got = int(self.http.get("/count").text)
            if got >= want:
                return got
            time.sleep(0.2)
        return got

    def arrivals(self) -> list[tuple[str, str, float]]:
        data: list[Any] = self.http.get("/dump", timeout=60).json()
        self.http.post("/reset")
        return [(p, i, t) for p, i, t in data]

    def event_times(self) -> dict[str, float]:
        with self.store.read() as conn:
            return {
                r.id: r.time.timestamp()
                for r in conn.execute(sa.select(events.c.id, events.c.time)).all()
            }

    def clear_events(self) -> None:
        # between phases: no backlog (the hanging subscriber's rows are dropped too)
        with self.store.write() as conn:
            conn.execute(sa.text("DELETE FROM delivery_attempts"))
            conn.execute(sa.text("DELETE FROM deliveries"))


def analyse(arrivals: list[tuple[str, str, float]], times: dict[str, float]) -> dict[str, Any]:
    unique = {(p, i) for p, i, _ in arrivals}
    lat = [(t - times[i]) * 1000 for p, i, t in arrivals if i in times]
    first_commit = min(times[i] for _, i, _ in arrivals if i in times)
    last = max(t for _, _, t in arrivals)
    return {
        "arrived": len(arrivals),
        "unique": len(unique),
        "rate": len(unique) / (last - first_commit),
        "p50": pct(lat, 0.5),
        "p99": pct(lat, 0.99),
    }


def bench_fanout(sqlite: bool, runs: int, latency_runs: int, latency_rate: float) -> list[Any]:
    rows = []
    for hanging in (False, True):
        with Scenario(sqlite, hanging) as sc:
            # warm-up (sessions, connections), not measured
            sc.create_runs(5, None, sc.pv1)
            sc.wait_count(5 * 2 * sc.healthy(), 60)
            sc.arrivals()
            sc.clear_events()
            # latency: a sub-saturating stream of one-step runs (RunQueued +
            # NodeQueued per transaction, like the engine's transitions)
            n_lat = latency_runs * 2 * sc.healthy()
            sc.create_runs(latency_runs, latency_rate, sc.pv1)
            got = sc.wait_count(n_lat, 120)
            lat = analyse(sc.arrivals(), sc.event_times())
            sc.clear_events()
            # throughput: the burst
            want = runs * 10 * sc.healthy()
            t0 = time.time()
            sc.create_runs(runs, None)
            created = time.time() - t0
            got = sc.wait_count(want, 900)
            thr = analyse(sc.arrivals(), sc.event_times())
            rows.append(
                (
                    "1 of 10 hanging" if hanging else "10 healthy",
                    runs * 10,
                    want,
                    thr["unique"],
                    got - thr["unique"],
                    f"{created:.1f}",
                    f"{thr['rate']:.0f}",
                    f"{thr['p50']:.0f} / {thr['p99']:.0f}",
                    f"{latency_rate * 2 * sc.healthy():.0f}",
                    f"{lat['p50']:.1f} / {lat['p99']:.1f}",
                )
            )
            console.print(rows[-1])
    return rows


def fanout(args: argparse.Namespace) -> None:
    rows = bench_fanout(args.sqlite, args.runs, args.latency_runs, args.latency_rate)
    t = Table(
        "scenario",
        "events",
        "deliveries expected",
        "arrived (unique)",
        "duplicates",
        "burst created in (s)",
        "deliveries/s",
        "burst latency p50/p99 (ms)",
        "latency phase rate (deliveries/s)",
        "latency p50/p99 (ms)",
        title=f"event fan-out on {'SQLite' if args.sqlite else 'PostgreSQL'} "
        f"({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
    )
    for r in rows:
        t.add_row(*(str(x) for x in r))
    console.print(t)


# -- the engine cost of the hook ------------------------------------------------------------------


def engine(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(HERE))
    from engine_bench import chain, fan, run_embedded

    t = Table("database", "pipeline", "subscribers", "ms/step (median of 3)", "min")
    for sqlite in (True, False):
        for name, spec in (("chain", chain(1000)), ("fan-out", fan(1000))):
            for n_subs in (0, 1):
                ts = []
                for _ in range(3):
                    tmp = Path(tempfile.mkdtemp())
                    url = fresh_db(sqlite, tmp)
                    settings = Settings(home=tmp, database_url=url)
                    store = Store.from_settings(settings)
                    if n_subs:
                        with store.write() as conn:
                            subs.create_subscription(
                                conn,
                                subs.SubscriptionCreate(name="all", url="http://127.0.0.1:9/"),
                            )
                    ts.append(run_embedded(store, settings, spec))
                    store.dispose()
                    drop_db(url)
                t.add_row(
                    "SQLite" if sqlite else "PostgreSQL",
                    name,
                    str(n_subs),
                    f"{statistics.median(ts):.2f}",
                    f"{min(ts):.2f}",
                )
                console.print(f"{name} {n_subs} {ts}")
    console.print(t)


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fanout")
    f.add_argument("--sqlite", action="store_true")
    f.add_argument("--runs", type=int, default=1000, help="run creations (10 events each)")
    f.add_argument("--latency-runs", type=int, default=300)
    f.add_argument("--latency-rate", type=float, default=10.0, help="run creations per second")
    sub.add_parser("engine")
    r = sub.add_parser("receiver")
    r.add_argument("port", type=int)
    d = sub.add_parser("deliverer")
    d.add_argument("url")
    d.add_argument("home")
    args = ap.parse_args()
    if args.cmd == "receiver":
        asyncio.run(_receiver(args.port))
    elif args.cmd == "deliverer":
        _deliverer_main(args.url, args.home)
    elif args.cmd == "fanout":
        fanout(args)
    else:
        engine(args)


if __name__ == "__main__":
    main()

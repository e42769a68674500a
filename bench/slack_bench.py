"""Slack bot benchmarks (issue 14). Not a test: prints a table.

    .venv/bin/python bench/slack_bench.py            # SQLite + PostgreSQL
    .venv/bin/python bench/slack_bench.py --no-pg

Against a real ``ferryman server`` process with the bot on, pointed at the
fake Slack Web API of the tests (loopback), requests signed like Slack's:
- ack latency of ``POST /slack/events`` (request in → 200 out) over 500
  signed ``run`` mentions, one at a time: p50/p99 (the ack includes the
  durable part: the audit row and the run's creation);
- command → run queued: from sending the command to the run's row (its
  ``created_at``), p50/p99;
- 100 commands from 10 users in 10 s (10 per second, each user's commands
  concurrent with the others'), a fifth of them delivered twice more as
  Slack retries (``X-Slack-Retry-Num``): answers, duplicate answers,
  duplicate runs, errors.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the tests' fake Slack

from bench.api_bench import PG_URL, _health_ok, free_port, reset_pg  # noqa: E402
from tests.slack_fake import FakeSlack, fake_slack, mention, sign  # noqa: E402

from ferryman.domain.spec import FunctionRef, PipelineSpec, PythonStep  # noqa: E402
from ferryman.services.auth import Role, create_user  # noqa: E402
from ferryman.services.catalog import register  # noqa: E402
from ferryman.settings import Settings  # noqa: E402
from ferryman.store.engine import Store  # noqa: E402
from ferryman.store.tables import runs  # noqa: E402

SECRET = "bench-signing-secret-0123456789"
TOKEN = "xoxb-bench-token"
USERS = [f"UBENCH{i:02d}" for i in range(10)]


def spec() -> PipelineSpec:
    noop = FunctionRef(file=str(HERE / "steps.py"), qualname="noop")
    return PipelineSpec(
        name="slack-bench",
        steps=[PythonStep(name="a", function=noop, infrastructure="inline")],
    )


@contextmanager
def server(db_url: str, home: Path, fake: FakeSlack) -> Iterator[str]:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FERRYMAN_")},
        "FERRYMAN_HOME": str(home),
        "FERRYMAN_DATABASE_URL": db_url,
        "FERRYMAN_PORT": str(port),
        "FERRYMAN_SLACK_BOT_TOKEN": TOKEN,
        "FERRYMAN_SLACK_SIGNING_SECRET": SECRET,
        "FERRYMAN_SLACK_API_URL": fake.api_url,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "ferryman", "server"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while not _health_ok(port):
            if proc.poll() is not None:
                raise SystemExit("the server exited during start-up")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def seed(db_url: str, home: Path) -> Store:
    store = Store.from_settings(Settings(home=home, database_url=db_url))
    with store.write() as conn:
        register(conn, "default", spec())
        for i, uid in enumerate(USERS):
            create_user(conn, f"bench{i}", None, Role.OPERATOR, slack_user_id=uid)
    return store


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def post(client: httpx.Client, base: str, payload: dict[str, Any], **headers: str) -> int:
    body = json.dumps(payload).encode()
    r = client.post(
        f"{base}/slack/events",
        content=body,
        headers={"Content-Type": "application/json", **sign(SECRET, body), **headers},
    )
    return r.status_code


def ack_latency(base: str, store: Store, n: int) -> dict[str, float]:
    """n sequential signed run mentions: ack p50/p99, command → run queued p50/p99."""
    acks: list[float] = []
    sent: dict[str, float] = {}  # event key -> wall clock at send
    errors = 0
    with httpx.Client(timeout=30) as client:
        for i in range(n + 20):  # the first 20 warm up, not counted
            ev = mention("run slack-bench", user=USERS[i % len(USERS)])
            wall = time.time()
            t0 = time.perf_counter()
            status = post(client, base, ev)
            elapsed = time.perf_counter() - t0
            if i >= 20:
                acks.append(elapsed)
                sent[f"slack:event:{ev['event_id']}"] = wall
                errors += status != 200
    with store.read() as conn:
        rows = conn.execute(
            sa.select(runs.c.idempotency_key, runs.c.created_at).where(
                runs.c.idempotency_key.in_(list(sent))
            )
        ).all()
    queued = [
        max(0.0, r.created_at.replace(tzinfo=dt.UTC).timestamp() - sent[r.idempotency_key])
        for r in rows
    ]
    return {
        "ack_p50": pct(acks, 0.5) * 1000,
        "ack_p99": pct(acks, 0.99) * 1000,
        "ack_max": max(acks) * 1000,
        "queued_p50": pct(queued, 0.5) * 1000 if queued else float("nan"),
        "queued_p99": pct(queued, 0.99) * 1000 if queued else float("nan"),
        "runs": len(rows),
        "errors": errors,
    }


def burst(base: str, store: Store, fake: FakeSlack) -> dict[str, Any]:
    """100 commands from 10 users in 10 s; a fifth retried twice by 'Slack'."""
    before_calls = len(fake.of("chat.postMessage"))
    with store.read() as conn:
        runs_before = conn.execute(sa.select(sa.func.count()).select_from(runs)).scalar_one()
    events = [mention("run slack-bench", user=USERS[i % 10], channel="CBURST") for i in range(100)]
    statuses: list[int] = []
    lock = threading.Lock()

    def send(i: int) -> None:
        with httpx.Client(timeout=30) as client:
            got = [post(client, base, events[i])]
            if i % 5 == 0:
                for n in (1, 2):
                    got.append(post(client, base, events[i], **{"X-Slack-Retry-Num": str(n)}))
        with lock:
            statuses.extend(got)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(10) as pool:
        for i in range(100):
            pool.submit(send, i)
            time.sleep(max(0.0, t0 + (i + 1) * 0.1 - time.perf_counter()))
    sending = time.perf_counter() - t0
    deadline = time.monotonic() + 60
    threads = {e["event"]["ts"] for e in events}
    while time.monotonic() < deadline:
        answers = [
            c
            for c in fake.of("chat.postMessage")[before_calls:]
            if c.args.get("thread_ts") in threads and c.args.get("blocks")
        ]
        if len({c.args["thread_ts"] for c in answers}) >= 100:
            break
        time.sleep(0.1)
    time.sleep(1.0)  # late duplicates would show now
    answers = [
        c
        for c in fake.of("chat.postMessage")[before_calls:]
        if c.args.get("thread_ts") in threads and c.args.get("blocks")
    ]
    per_thread = Counter(c.args["thread_ts"] for c in answers)
    with store.read() as conn:
        new_runs = conn.execute(sa.select(sa.func.count()).select_from(runs)).scalar_one()
    return {
        "sent": len(statuses),
        "seconds": sending,
        "answered": len(per_thread),
        "duplicate_answers": sum(n - 1 for n in per_thread.values()),
        "runs": new_runs - runs_before,
        "errors": sum(s != 200 for s in statuses),
    }


def measure(label: str, db_url: str, n: int) -> list[tuple[str, str, str]]:
    with tempfile.TemporaryDirectory() as tmp, fake_slack() as fake:
        home = Path(tmp)
        if db_url.startswith("postgresql"):
            reset_pg()
        else:
            db_url = f"sqlite:///{tmp}/ferryman.db"
        with server(db_url, home, fake) as base:
            store = seed(db_url, home)
            try:
                a = ack_latency(base, store, n)
                b = burst(base, store, fake)
            finally:
                store.dispose()
    return [
        (label, f"ack p50 / p99 / max ({n} signed run commands)",
         f"{a['ack_p50']:.1f} / {a['ack_p99']:.1f} / {a['ack_max']:.1f} ms"),
        (label, "command → run queued p50 / p99",
         f"{a['queued_p50']:.1f} / {a['queued_p99']:.1f} ms "
         f"({a['runs']} runs, {a['errors']} errors)"),
        (label, f"100 commands, 10 users, {b['seconds']:.1f} s (+40 retries)",
         f"{b['answered']} answered, {b['duplicate_answers']} duplicate answers, "
         f"{b['runs']} runs, {b['errors']} errors of {b['sent']} requests"),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-pg", action="store_true")
    parser.add_argument("-n", type=int, default=500)
    args = parser.parse_args()
    rows = measure("SQLite", "sqlite", args.n)
    if not args.no_pg:
        rows += measure("PostgreSQL", PG_URL, args.n)
    table = Table(title="Slack bot")
    for col in ("database", "figure", "value"):
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    Console().print(table)


if __name__ == "__main__":
    main()

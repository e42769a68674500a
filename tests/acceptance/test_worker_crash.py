"""Acceptance: a worker is ``kill -9``-ed in the middle of a wide run (SPEC §2, §9).

Two real ``ferryman worker`` processes share one PostgreSQL database and run a
pipeline of 202 steps (seed → 200-way fan-out → fan-in) on the process
infrastructure. Once worker ``w1`` is busy with steps in flight, it gets
SIGKILL. The run must still succeed: the steps ``w1`` held are detected through
their expired leases and retried on ``w2``; the step processes of ``w1`` die
with it; every step succeeds exactly once; and, counted from the side effects
each attempt records (``tests/pipelines/crash.py``), no attempt ran twice and
no two attempts of a step ever overlapped in time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import pairwise
from pathlib import Path
from typing import Any

import psutil
import pytest
import sqlalchemy as sa

from ferryman.dsl.loader import load_pipeline
from ferryman.services.catalog import register
from ferryman.services.queries import get_events
from ferryman.services.runs import RunService
from ferryman.store.engine import Store
from ferryman.store.tables import metadata, nodes, runs, workers

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux"),
]

ORPHAN_GRACE = 0.5  # seconds within which a step's lifeline must kill it
PIPES = Path(__file__).parent.parent / "pipelines" / "crash.py"
FAN_OUT = 200
ALL_NODES = {"seed", "gather", *(f"work-{i:03d}" for i in range(FAN_OUT))}
WORKER_CMD = [sys.executable, "-c", "from ferryman.cli.app import main; main()", "worker"]
LEASE_SECONDS = 2.0
SLEEP_SECONDS = 0.5  # how long each fan-out step works (tests/pipelines/crash.py)


# -- helpers ------------------------------------------------------------------


def wait_for(
    what: str, predicate: Callable[[], Any], timeout: float, check: Callable[[], None]
) -> Any:
    """Poll ``predicate`` until it is truthy; ``check`` fails fast on a dead worker."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        check()
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


class Workers:
    """The ``ferryman worker`` subprocesses of the test, logging to files."""

    def __init__(self, env: dict[str, str], logdir: Path) -> None:
        self.env = env
        self.logdir = logdir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.killed: set[str] = set()

    def start(self, worker_id: str) -> subprocess.Popen[bytes]:
        with open(self.logdir / f"{worker_id}.log", "wb") as out:
            proc = subprocess.Popen(
                [*WORKER_CMD, "--concurrency", "8", "--id", worker_id, "--log-level", "WARNING"],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.procs[worker_id] = proc
        return proc

    def logs(self) -> str:
        parts = []
        for wid in self.procs:
            text = (self.logdir / f"{wid}.log").read_text(errors="replace")
            parts.append(f"--- {wid} (last lines) ---\n" + "\n".join(text.splitlines()[-30:]))
        return "\n".join(parts)

    def check_alive(self) -> None:
        for wid, proc in self.procs.items():
            if wid not in self.killed and proc.poll() is not None:
                pytest.fail(f"worker {wid} exited with {proc.returncode}\n{self.logs()}")

    def kill9(self, worker_id: str) -> None:
        proc = self.procs[worker_id]
        self.killed.add(worker_id)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def stop_all(self) -> None:
        """SIGTERM (the worker drains), then SIGKILL whatever is left."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


@contextmanager
def running_workers(env: dict[str, str], logdir: Path) -> Iterator[Workers]:
    ws = Workers(env, logdir)
    try:
        yield ws
    finally:
        ws.stop_all()


def truncate(store: Store) -> None:
    names = ", ".join(t.name for t in reversed(metadata.sorted_tables))
    with store.engine.begin() as c:
        c.exec_driver_sql(f"TRUNCATE {names} RESTART IDENTITY CASCADE")


def worker_env(db_url: str, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERRYMAN_")}
    env.update(
        FERRYMAN_DATABASE_URL=db_url,
        FERRYMAN_HOME=str(home),
        FERRYMAN_LEASE_SECONDS=str(LEASE_SECONDS),
        FERRYMAN_SWEEP_SECONDS="0.5",
        FERRYMAN_GRACE_SECONDS="1",
        FERRYMAN_POLL_SECONDS="0.5",
        PYTHONUNBUFFERED="1",
    )
    return env


def effects(outdir: Path) -> list[dict[str, Any]]:
    """Every side-effect record: node, attempt, pid, ppid, time, kind."""
    out = []
    for p in outdir.iterdir():
        if p.suffix not in (".start", ".end"):
            continue
        rec = json.loads(p.read_text())
        rec["kind"] = p.suffix[1:]
        node, attempt, pid = p.name.rsplit(".", 3)[:3]
        assert (rec["node"], rec["attempt"], rec["pid"]) == (node, int(attempt), int(pid))
        out.append(rec)
    return out


def in_flight(outdir: Path, ppid: int) -> dict[tuple[str, int, int], dict[str, Any]]:
    """Attempts started by worker ``ppid`` that have not recorded their end.

    Cheap (file names first, contents only of unfinished attempts): it runs
    in the poll loop right before the kill.
    """
    names = {p.name for p in outdir.iterdir()}
    out = {}
    for name in names:
        stem, _, kind = name.rpartition(".")
        if kind != "start" or f"{stem}.end" in names:
            continue
        rec = json.loads((outdir / name).read_text())
        if rec["ppid"] == ppid:
            out[(rec["node"], rec["attempt"], rec["pid"])] = rec
    return out


def alive(pid: int, not_before: float | None = None) -> bool:
    try:
        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return False
        # a recycled pid belongs to a process created after ours started
        return not_before is None or p.create_time() <= not_before + 1.0
    except psutil.NoSuchProcess:
        return False


def birth(p: psutil.Process) -> float | None:
    try:
        return float(p.create_time())
    except psutil.NoSuchProcess:
        return None


def failures(store: Store, run_id: str) -> str:
    with store.read() as conn:
        rows = conn.execute(
            sa.select(nodes.c.name, nodes.c.state, nodes.c.attempt, nodes.c.error)
            .where(nodes.c.run_id == run_id, nodes.c.state != "succeeded")
            .limit(10)
        ).all()
    return "\n".join(f"{r.name}#{r.attempt} {r.state}: {r.error}" for r in rows)


def all_events(store: Store, run_id: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    with store.read() as conn:
        while True:
            page = get_events(conn, run_id, after_seq=out[-1]["seq"] if out else 0, limit=1000)
            if not page:
                return out
            out.extend(page)


# -- the test -------------------------------------------------------------------


def test_kill_9_worker_mid_run_steps_recovered_exactly_once(
    pg_database: str, tmp_path: Path
) -> None:
    store = Store(pg_database)
    truncate(store)
    outdir = tmp_path / "effects"
    outdir.mkdir()
    home = tmp_path / "home"
    home.mkdir()

    def count(*where: Any) -> int:
        with store.read() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count()).select_from(nodes).where(*where)
                ).scalar_one()
            )

    try:
        with running_workers(worker_env(pg_database, home), tmp_path) as ws:
            w1 = ws.start("w1")
            w2 = ws.start("w2")

            def registered() -> bool:
                with store.read() as conn:
                    ids = set(conn.execute(sa.select(workers.c.id)).scalars())
                return ids == {"w1", "w2"}

            wait_for("both workers to register", registered, 20, ws.check_alive)

            spec = load_pipeline(f"{PIPES}:crash")
            assert len(spec.steps) == len(ALL_NODES) >= 200
            with store.write() as conn:
                pv = register(conn, "default", spec)
            started = RunService(store).start_version(pv, {"outdir": str(outdir)})
            assert started.created
            run_id = started.id

            # -- in the middle: some steps done, w1 busy with steps in flight, one
            # of which has just started (so it cannot end before the kill lands) --
            def mid_run() -> bool:
                done = count(nodes.c.run_id == run_id, nodes.c.state == "succeeded")
                if done < FAN_OUT // 10:
                    return False
                on_w1 = count(
                    nodes.c.run_id == run_id, nodes.c.worker_id == "w1", nodes.c.state == "running"
                )
                if on_w1 < 2:
                    return False
                step_procs[:] = psutil.Process(w1.pid).children(recursive=True)
                recs = in_flight(outdir, w1.pid).values()
                fresh = [r for r in recs if time.time() - r["time"] < SLEEP_SECONDS / 2]
                return len(recs) >= 2 and bool(fresh)

            step_procs: list[psutil.Process] = []
            wait_for("w1 to be mid-flight", mid_run, 30, ws.check_alive)
            ws.kill9("w1")
            killed_at = time.time()
            left = count(nodes.c.run_id == run_id, nodes.c.state.in_(["pending", "queued"]))
            assert left > 0, "the fan-out was over before the kill: not mid-run"

            # -- the killed worker's step processes die with it (PR_SET_PDEATHSIG) --
            cut = in_flight(outdir, w1.pid)
            assert cut, "w1 had no step in flight when it was killed"
            pids = {p.pid: birth(p) for p in step_procs}
            pids.update({r["pid"]: r["time"] for r in cut.values()})

            def orphans_gone() -> bool:
                return not [pid for pid, t in pids.items() if alive(pid, t)]

            # they die at once, well before w1's leases expire and w2 retries them
            wait_for("w1's step processes to die", orphans_gone, LEASE_SECONDS, ws.check_alive)
            dead_at = time.time()

            # -- the run ends, on w2 alone --
            def ended() -> str | None:
                with store.read() as conn:
                    state = conn.execute(
                        sa.select(runs.c.state).where(runs.c.id == run_id)
                    ).scalar_one()
                return state if state in ("succeeded", "failed", "cancelled") else None

            state = wait_for("the run to end", ended, 60, ws.check_alive)
            assert state == "succeeded", f"{failures(store, run_id)}\n{ws.logs()}"
        check_outcome(store, run_id, outdir, w1.pid, w2.pid, cut, killed_at, dead_at)
    finally:
        store.dispose()


def check_outcome(
    store: Store,
    run_id: str,
    outdir: Path,
    w1_pid: int,
    w2_pid: int,
    cut: dict[tuple[str, int, int], dict[str, Any]],
    killed_at: float,
    dead_at: float,
) -> None:
    worker_of_pid = {w1_pid: "w1", w2_pid: "w2"}
    evs = all_events(store, run_id)
    by_node: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in evs:
        if e["node"] is not None:
            by_node[e["node"]].append(e)
    assert evs[-1]["type"] == "RunSucceeded"
    assert set(by_node) == ALL_NODES

    # every node succeeded, exactly once
    with store.read() as conn:
        states = dict(
            conn.execute(
                sa.select(nodes.c.name, nodes.c.state).where(nodes.c.run_id == run_id)
            ).all()
        )
    assert states == dict.fromkeys(ALL_NODES, "succeeded")
    succeeded = Counter(e["node"] for e in evs if e["type"] == "NodeSucceeded")
    assert succeeded == Counter(ALL_NODES), "a node succeeded more or less than once"

    # which worker ran each attempt, according to the engine
    ran_on = {
        (e["node"], e["attempt"]): e["data"]["worker"] for e in evs if e["type"] == "NodeRunning"
    }
    assert set(ran_on.values()) <= {"w1", "w2"}

    # the only failures are the attempts lost with w1, and each was retried on w2
    retries = [e for e in evs if e["type"] == "NodeRetrying"]
    assert retries, "no attempt was recovered from the killed worker"
    for e in retries:
        assert e["message"] == "worker lost: lease of worker w1 expired", e
        assert ran_on[(e["node"], e["attempt"])] == "w1"
    lost = {e["node"]: e["attempt"] for e in retries}
    assert len(lost) == len(retries), "a node was lost more than once"
    for node, attempt in lost.items():
        final = next(e for e in by_node[node] if e["type"] == "NodeSucceeded")
        assert final["attempt"] == attempt + 1, (node, final)
        assert ran_on[(node, final["attempt"])] == "w2", (node, final)
    # every attempt cut short by the kill was among them
    assert {(node, attempt) for node, attempt, _ in cut} <= set(lost.items())
    # and w1 ran nothing after the kill
    for e in evs:
        if e["type"] == "NodeRunning" and e["data"]["worker"] == "w1":
            assert e["time"].timestamp() <= killed_at, e

    # -- side effects, per attempt ----------------------------------------------
    recs = effects(outdir)
    starts = [r for r in recs if r["kind"] == "start"]
    ends = {(r["node"], r["attempt"], r["pid"]): r for r in recs if r["kind"] == "end"}
    # no attempt started twice (on one worker or two)
    per_attempt = Counter((r["node"], r["attempt"]) for r in starts)
    twice = {k: n for k, n in per_attempt.items() if n > 1}
    assert not twice, f"attempts that ran more than once: {twice}"
    # every record comes from a step process of one of the two workers, and the
    # engine agrees on which worker ran that attempt
    orphans = set()
    for r in starts:
        if r["ppid"] not in worker_of_pid:
            # w1 died between this step's lifeline check and its first line: the
            # step may start (it was already running) but its lifeline kills it
            # at once; it must be one of w1's, right at w1's death, and never end.
            key = (r["node"], r["attempt"], r["pid"])
            assert r["ppid"] == 1 and ran_on[(r["node"], r["attempt"])] == "w1", (
                f"step process {r['pid']} ({r['node']}#{r['attempt']}) ran its function "
                f"orphaned (parent pid {r['ppid']}): {r}"
            )
            assert r["time"] <= dead_at + ORPHAN_GRACE, f"an orphan started late: {r}"
            assert key not in ends, f"an orphaned step ran to its end: {r}"
            orphans.add(key)
            continue
        assert ran_on[(r["node"], r["attempt"])] == worker_of_pid[r["ppid"]], r
        if r["ppid"] == w1_pid:
            assert r["time"] <= dead_at, f"a step of w1 started after w1 was killed: {r}"
    # w1's cut attempts never finished; nothing of w1's ended after its death
    for key in cut:
        assert key not in ends, f"{key} finished after its worker was killed"
    for r in ends.values():
        if worker_of_pid.get(r["ppid"]) == "w1":
            assert r["time"] <= dead_at, r
    # the successful attempt of every node did its work to the end
    for node in ALL_NODES:
        final = next(e for e in by_node[node] if e["type"] == "NodeSucceeded")
        assert any((node, final["attempt"]) == (k[0], k[1]) for k in ends), (
            f"{node}#{final['attempt']} succeeded without its side effect"
        )
    # no two attempts of a node ever overlapped in time (a killed attempt's
    # interval ends when its process was seen dead)
    intervals: dict[str, list[tuple[float, float, int, str]]] = defaultdict(list)
    for r in starts:
        key = (r["node"], r["attempt"], r["pid"])
        if key in orphans:  # killed by its lifeline within the grace
            end = r["time"] + ORPHAN_GRACE
        else:
            end = ends[key]["time"] if key in ends else dead_at
        owner = worker_of_pid.get(r["ppid"], "w1")
        intervals[r["node"]].append((r["time"], end, r["attempt"], owner))
    for node, spans in intervals.items():
        spans.sort()
        for a, b in pairwise(spans):
            assert a[1] < b[0], f"attempts of {node} overlapped: {a} and {b}"
    # at least one of w1's steps was really re-run on w2 (side effects on both)
    assert any({w for *_, w in spans} == {"w1", "w2"} for spans in intervals.values()), (
        "no step ran on both workers"
    )

"""Re-attach: a worker that finds a lost worker's step still running on an
infrastructure that can re-attach (containers, Kubernetes jobs) adopts it
instead of launching it again. On SQLite and PostgreSQL.

The infrastructure here is a real one written for the test: each attempt is
a detached process group (it survives its worker, like a container does)
writing its output to a file; ``attach`` re-reads that file. Worker loss is
simulated in-process: worker A launches the step and is then abandoned (no
more turns, so no heartbeats), and its lease is expired.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import sqlalchemy as sa

from ferryman.domain.spec import ContainerStep, FunctionRef, PipelineSpec, PythonStep
from ferryman.engine.worker import Worker
from ferryman.infra.base import Infrastructure, LogSink, Result, StepLaunch
from ferryman.infra.container import container_command, container_env
from ferryman.infra.registry import InfraPool
from ferryman.services.catalog import register
from ferryman.services.queries import get_events, get_logs, get_run
from ferryman.services.runs import RunService
from ferryman.settings import Settings
from ferryman.store.engine import Store
from ferryman.store.tables import nodes, utcnow

WRAPPER = """
import os, subprocess, sys
d = sys.argv[1]
with open(os.path.join(d, "out"), "ab", buffering=0) as out:
    code = subprocess.call(sys.argv[2:], stdout=out, stderr=subprocess.STDOUT)
tmp = os.path.join(d, "code.tmp")
with open(tmp, "w") as f:
    f.write(str(code))
os.replace(tmp, os.path.join(d, "code"))
"""


_PROCS: list[subprocess.Popen[bytes]] = []


@pytest.fixture(autouse=True)
def reap() -> Iterator[None]:
    """Detached step processes outlive their worker on purpose: reap them here."""
    yield
    while _PROCS:
        p = _PROCS.pop()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


class DetachedInfrastructure(Infrastructure):
    """Each attempt: a process group in its own session, output in a file."""

    kind = "detached"
    reattachable: ClassVar[bool] = True

    def __init__(self) -> None:
        super().__init__()
        self._tails: dict[str, threading.Thread] = {}

    def start(self, launch: StepLaunch, sink: LogSink) -> str:
        d = tempfile.mkdtemp(prefix="ferryman-detached-")
        command, args = container_command(launch, python=sys.executable)
        env = container_env(launch, base=dict(os.environ))
        proc = subprocess.Popen(
            [sys.executable, "-c", WRAPPER, d, *(command or []), *(args or [])],
            env=env,
            start_new_session=True,
        )
        _PROCS.append(proc)
        Path(d, "pid").write_text(str(proc.pid))
        self._tail(d, sink)
        return d

    def _tail(self, d: str, sink: LogSink) -> None:
        def run() -> None:
            path = Path(d, "out")
            pos = 0
            buf = b""
            while True:
                # ended, or removed from outside (its pid file is gone)
                done = Path(d, "code").exists() or not Path(d, "pid").exists()
                if path.exists():
                    with path.open("rb") as f:
                        f.seek(pos)
                        chunk = f.read()
                    pos += len(chunk)
                    buf += chunk
                    *lines, buf = buf.split(b"\n")
                    for line in lines:
                        sink("stdout", line.decode())
                if done:
                    if buf:
                        sink("stdout", buf.decode())
                    return
                time.sleep(0.02)

        t = threading.Thread(target=run, daemon=True)
        self._tails[d] = t
        t.start()

    def attach(self, identifier: str, sink: LogSink, since: Any = None) -> bool:
        if not Path(identifier, "pid").exists():
            return False
        self._tail(identifier, sink)  # from the start: repeats are allowed, losses are not
        return True

    def watch(self, identifier: str) -> Result:
        self._tails[identifier].join()
        code = Path(identifier, "code")
        if not code.exists():
            return Result(-1, identifier, "disappeared")
        return Result(int(code.read_text()), identifier)

    def kill(self, identifier: str, grace_seconds: float) -> None:
        pid = int(Path(identifier, "pid").read_text())
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)

    def preview(self, launch: StepLaunch) -> dict[str, Any]:
        return {"kind": self.kind}


def pool() -> InfraPool:
    p = InfraPool()
    p._instances["detached"] = DetachedInfrastructure()
    return p


def create(store: Store, spec: PipelineSpec) -> str:
    with store.write() as conn:
        pv = register(conn, "default", spec)
    return RunService(store).start_version(pv, {}).id


def launch_then_lose(store: Store, settings: Settings, run_id: str) -> Worker:
    """Worker A starts the step, then stops taking turns (as if killed -9)."""
    a = Worker(store, settings, worker_id="worker-a", infra=pool())
    deadline = time.monotonic() + 20
    while True:
        a.turn()
        with store.read() as conn:
            ident = conn.execute(
                sa.select(nodes.c.infra_id).where(nodes.c.run_id == run_id)
            ).scalar()
        if ident:
            break
        assert time.monotonic() < deadline, "worker A never started the step"
        time.sleep(0.05)
    with store.write() as conn:  # worker A is gone: its lease runs out
        conn.execute(
            sa.update(nodes)
            .where(nodes.c.run_id == run_id)
            .values(lease_expires_at=utcnow() - dt.timedelta(seconds=1))
        )
    return a


def test_a_lost_workers_container_step_is_adopted_not_relaunched(
    store: Store, settings: Settings, tmp_path: Path
) -> None:
    side = tmp_path / "side-effects"
    script = f"echo started; sleep 1.5; echo ran >> {side}; echo finished"
    spec = PipelineSpec(
        name="adopt",
        infrastructure="detached",
        steps=[ContainerStep(name="job", image="none", command=["sh", "-c", script])],
    )
    run_id = create(store, spec)
    launch_then_lose(store, settings, run_id)
    Worker(store, settings, worker_id="worker-b", infra=pool()).run_until({run_id}, timeout=30)
    with store.read() as conn:
        run = get_run(conn, run_id)
        lines = [r["line"] for r in get_logs(conn, run_id)]
        types = [e["type"] for e in get_events(conn, run_id)]
    assert run["state"] == "succeeded", run
    (job,) = run["nodes"]
    assert (job["attempt"], job["worker_id"], job["state"]) == (1, "worker-b", "succeeded")
    assert side.read_text() == "ran\n"  # it ran exactly once
    assert "finished" in lines
    assert any("re-attached to detached" in line and "worker-a" in line for line in lines)
    assert types.count("NodeRunning") == 1 and "NodeRetrying" not in types


def test_a_python_steps_result_survives_the_re_attach(
    store: Store, settings: Settings, tmp_path: Path
) -> None:
    code = tmp_path / "slow.py"
    code.write_text("import time\n\ndef slow():\n    time.sleep(1.5)\n    return {'answer': 42}\n")
    spec = PipelineSpec(
        name="adopt-py",
        infrastructure="detached",
        steps=[PythonStep(name="slow", function=FunctionRef(file=str(code), qualname="slow"))],
    )
    run_id = create(store, spec)
    launch_then_lose(store, settings, run_id)
    Worker(store, settings, worker_id="worker-b", infra=pool()).run_until({run_id}, timeout=30)
    with store.read() as conn:
        run = get_run(conn, run_id)
        out = conn.execute(sa.select(nodes.c.output).where(nodes.c.run_id == run_id)).scalar()
    assert run["state"] == "succeeded", run
    assert out == {"answer": 42}
    assert run["nodes"][0]["attempt"] == 1


def test_a_lost_step_whose_container_is_gone_is_retried(
    store: Store, settings: Settings, tmp_path: Path
) -> None:
    marker = tmp_path / "attempts"
    spec = PipelineSpec(
        name="gone",
        infrastructure="detached",
        steps=[
            ContainerStep(
                name="job",
                image="none",
                command=["sh", "-c", f"echo x >> {marker}; sleep 1"],
                retries=1,
                retry_delay=0,
            )
        ],
    )
    run_id = create(store, spec)
    launch_then_lose(store, settings, run_id)
    with store.read() as conn:
        ident = conn.execute(sa.select(nodes.c.infra_id).where(nodes.c.run_id == run_id)).scalar()
    os.killpg(int(Path(ident, "pid").read_text()), signal.SIGKILL)
    Path(ident, "pid").unlink()  # the container was removed while nobody watched
    Worker(store, settings, worker_id="worker-b", infra=pool()).run_until({run_id}, timeout=30)
    with store.read() as conn:
        run = get_run(conn, run_id)
        evs = get_events(conn, run_id)
    assert run["state"] == "succeeded"
    assert run["nodes"][0]["attempt"] == 2
    failed = [e for e in evs if e["type"] == "NodeRetrying"]
    assert failed and "cannot re-attach" in failed[0]["message"]

"""Acceptance: a worker ``kill -9``-ed and restarted under the same ``--id``
does not keep its dead predecessor's steps ``running`` (issue 12, item 1).

The restarted worker is busy with steps of its own, so it renews leases on
every heartbeat; it must renew only the attempts it runs itself. The step
the dead worker held then expires, is swept ("worker lost") and retried.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from tests.pipelines.reliability import attempts
from tests.process_support import Procs, fast_env, wait_for

from ferryman.dsl.loader import load_pipeline
from ferryman.services.catalog import register
from ferryman.services.runs import RunService
from ferryman.settings import Settings
from ferryman.store.engine import Store
from ferryman.store.tables import events, nodes, runs

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux"),
]

PIPES = Path(__file__).parent.parent / "pipelines" / "reliability.py"
LEASE = 2.0


@pytest.fixture
def procs(settings: Settings, db_url: str, tmp_path: Path) -> Iterator[Procs]:
    p = Procs(fast_env(db_url, tmp_path / "home", LEASE), tmp_path)
    try:
        yield p
    finally:
        p.stop_all()


def run_state(store: Store, run_id: str) -> str:
    with store.read() as conn:
        return str(conn.execute(sa.select(runs.c.state).where(runs.c.id == run_id)).scalar())


def test_a_restarted_worker_does_not_keep_its_predecessors_leases(
    store: Store, procs: Procs, tmp_path: Path
) -> None:
    victim_dir, busy_dir = tmp_path / "victim", tmp_path / "busy"
    victim_dir.mkdir()
    busy_dir.mkdir()
    with store.write() as conn:
        pv = register(conn, "default", load_pipeline(f"{PIPES}:napper"))
    svc = RunService(store)
    victim = svc.start_version(pv, {"outdir": str(victim_dir), "first_seconds": 300}).id
    worker = ("worker", "--id", "w1", "--concurrency", "2", "--log-level", "WARNING")
    procs.start("w1", *worker)
    wait_for("the victim step to start", lambda: attempts(victim_dir).get("nap"), 60,
             procs.check_alive)  # fmt: skip
    procs.kill9("w1")
    # Work for the restarted worker: it runs (and renews leases) all along.
    busy = svc.start_version(pv, {"outdir": str(busy_dir), "first_seconds": 300}).id
    procs.start("w1", *worker)
    restarted = time.monotonic()
    wait_for("the busy step to start", lambda: attempts(busy_dir).get("nap"), 60,
             procs.check_alive)  # fmt: skip

    # lease + sweep + a retry, with a generous margin for a loaded machine
    wait_for(
        "the dead worker's step to be swept and finished",
        lambda: run_state(store, victim) == "succeeded",
        LEASE * 3 + 30,
        procs.check_alive,
    )
    took = time.monotonic() - restarted
    assert attempts(victim_dir) == {"nap": 2}
    assert attempts(victim_dir, "end") == {"nap": 1}  # only the retry ended
    with store.read() as conn:
        node = conn.execute(sa.select(nodes).where(nodes.c.run_id == victim)).one()
        lost = conn.execute(
            sa.select(events.c.message).where(events.c.run_id == victim)
        ).scalars().all()  # fmt: skip
    assert node.attempt == 2 and node.state == "succeeded"
    assert any("worker lost" in (m or "") for m in lost), lost
    assert run_state(store, busy) == "running"  # the restarted worker's own step runs on
    print(f"swept and finished {took:.1f}s after the restart")
    svc.cancel(busy)

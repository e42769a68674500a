"""Run leases (``services/run_leases.py``): a run whose ``ferryman run``
process died is ended by the next sweep or command, once its lease expired;
a live one is left alone."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import sqlalchemy as sa

from ferryman.dsl.loader import load_pipeline
from ferryman.engine.worker import Worker
from ferryman.services import run_leases
from ferryman.services.catalog import register
from ferryman.services.runs import RunService
from ferryman.settings import Settings
from ferryman.store.engine import Store
from ferryman.store.tables import nodes, runs

PIPES = Path(__file__).parent.parent / "pipelines" / "reliability.py"


def started_embedded(store: Store, settings: Settings, tmp_path: Path) -> tuple[str, Worker]:
    """A run whose embedded worker claimed its first step, then 'died'."""
    with store.write() as conn:
        pv = register(conn, "default", load_pipeline(f"{PIPES}:chain"))
    run_id = RunService(store).start_version(pv, {"outdir": str(tmp_path)}).id
    dead = Worker(store, settings, only_runs={run_id}, worker_id="host:4242:dead")
    with store.write() as conn:
        run_leases.hold(conn, run_id, dead.id, "ferryman run", settings.worker.lease_seconds)
        tx = dead.service.tx(conn)
        assert len(dead.claims.claim(tx, 1)) == 1
        tx.flush()
    return run_id, dead


def expire(store: Store, run_id: str) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    with store.write() as conn:
        conn.execute(sa.update(run_leases.run_leases).values(expires_at=past))
        conn.execute(sa.update(nodes).where(nodes.c.run_id == run_id).values(lease_expires_at=past))


def sweep(store: Store, settings: Settings) -> None:
    w = Worker(store, settings)
    with store.write() as conn:
        tx = w.service.tx(conn)
        w.leases.sweep(tx, adopt=False)
        tx.flush()


def test_a_workers_sweep_ends_the_run_of_a_dead_process(
    store: Store, settings: Settings, tmp_path: Path
) -> None:
    run_id, _ = started_embedded(store, settings, tmp_path)
    sweep(store, settings)  # the lease has not expired: nothing happens
    with store.read() as conn:
        assert conn.execute(sa.select(runs.c.state).where(runs.c.id == run_id)).scalar() == (
            "running"
        )
    expire(store, run_id)
    sweep(store, settings)
    with store.read() as conn:
        run = conn.execute(sa.select(runs).where(runs.c.id == run_id)).one()
        states = dict(
            conn.execute(
                sa.select(nodes.c.name, nodes.c.state).where(nodes.c.run_id == run_id)
            ).all()
        )
        left = conn.execute(sa.select(sa.func.count()).select_from(run_leases.run_leases))
        assert left.scalar_one() == 0
    assert (run.state, run.error) == ("failed", "the ferryman run process that ran it died")
    assert states == {"first": "cancelled", "second": "cancelled", "third": "cancelled"}
    assert RunService(store).rerun(run_id)  # a failed run: it can be re-run


def test_end_orphans_opens_no_write_without_an_orphan(
    store: Store, settings: Settings, tmp_path: Path
) -> None:
    run_id, _ = started_embedded(store, settings, tmp_path)
    assert run_leases.end_orphans(RunService(store)) == []
    expire(store, run_id)
    assert run_leases.end_orphans(RunService(store)) == [run_id]
    assert run_leases.end_orphans(RunService(store)) == []

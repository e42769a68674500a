"""Workers wake on new work within milliseconds, and share it safely."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from ferryman.domain.spec import FunctionRef, PipelineSpec, PythonStep
from ferryman.engine.worker import Worker
from ferryman.services.catalog import register
from ferryman.services.queries import get_events, get_run
from ferryman.services.runs import RunService
from ferryman.settings import Settings
from ferryman.store.engine import Store

STEPS = Path(__file__).resolve().parents[2] / "bench" / "steps.py"
NOOP = FunctionRef(file=str(STEPS), qualname="noop")


def fan(n: int) -> PipelineSpec:
    root = PythonStep(name="root", function=NOOP, infrastructure="inline")
    leaves = [
        PythonStep(name=f"s{i}", function=NOOP, infrastructure="inline", depends_on=["root"])
        for i in range(n)
    ]
    return PipelineSpec(name=f"fan{n}", steps=[root, *leaves])


def wait_state(store: Store, run_id: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        with store.read() as conn:
            state = get_run(conn, run_id, with_nodes=False)["state"]
        if state in ("succeeded", "failed", "cancelled") or time.monotonic() > deadline:
            return str(state)
        time.sleep(0.002)


def test_new_work_wakes_an_idle_worker_quickly(db_url: str, tmp_path: Path) -> None:
    """No polling: the fallback poll is 30 s, the run must be picked up at once.

    On PostgreSQL the run is created through a *separate* engine, so only
    LISTEN/NOTIFY can wake the worker; on SQLite the in-process signal does.
    """
    settings = Settings(home=tmp_path, database_url=db_url, poll_seconds=30, sweep_seconds=30)
    worker_store = Store.from_settings(settings)
    client_store = Store(db_url) if worker_store.is_postgres else worker_store
    worker = Worker(worker_store, settings)
    t = threading.Thread(target=worker.run, daemon=True)
    t.start()
    try:
        time.sleep(0.5)  # the worker is idle, waiting
        spec = PipelineSpec(name="one", steps=[PythonStep(name="a", function=NOOP,
                                                        infrastructure="inline")])  # fmt: skip
        with client_store.write() as conn:
            pv = register(conn, "default", spec)
        latencies = []
        for _ in range(5):
            t0 = time.perf_counter()
            run_id = RunService(client_store).start_version(pv, {}).id
            assert wait_state(client_store, run_id, 10) == "succeeded"
            latencies.append(time.perf_counter() - t0)
            time.sleep(0.2)
        assert max(latencies) < 1.0, latencies
        assert sorted(latencies)[2] < 0.3, latencies
    finally:
        worker.stop()
        t.join(15)
        worker_store.dispose()
        client_store.dispose()
    assert not t.is_alive()


def test_two_workers_share_a_fan_out_without_running_a_step_twice(
    pg_database: str, tmp_path: Path
) -> None:
    settings = Settings(home=tmp_path, database_url=pg_database, concurrency=4)
    stores = [Store.from_settings(settings) for _ in range(2)]
    spec = fan(200)
    with stores[0].write() as conn:
        pv = register(conn, "default", spec)
    workers = [Worker(s, settings, worker_id=f"w{i}") for i, s in enumerate(stores)]
    threads = [threading.Thread(target=w.run, daemon=True) for w in workers]
    for t in threads:
        t.start()
    try:
        run_id = RunService(stores[0]).start_version(pv, {}).id
        assert wait_state(stores[0], run_id, 60) == "succeeded"
    finally:
        for w in workers:
            w.stop()
        for t in threads:
            t.join(15)
    with stores[0].read() as conn:
        evs = get_events(conn, run_id, limit=10_000)
    for s in stores:
        s.dispose()
    running = Counter(e["node"] for e in evs if e["type"] == "NodeRunning")
    succeeded = Counter(e["node"] for e in evs if e["type"] == "NodeSucceeded")
    assert set(running.values()) == {1} and len(running) == 201
    assert set(succeeded.values()) == {1} and len(succeeded) == 201
    by_worker = Counter(e["data"]["worker"] for e in evs if e["type"] == "NodeRunning")
    assert set(by_worker) == {"w0", "w1"}, by_worker  # both took part


@pytest.mark.parametrize("n", [3])
def test_worker_stop_is_graceful(store: Store, settings: Settings, n: int) -> None:
    worker = Worker(store, settings)
    t = threading.Thread(target=worker.run, daemon=True)
    t.start()
    time.sleep(0.2)
    worker.stop()
    t.join(10)
    assert not t.is_alive()


def test_a_claim_never_takes_more_than_its_free_slots(store: Store, settings: Settings) -> None:
    """Regression: UPDATE ... WHERE id IN (SELECT ... LIMIT n FOR UPDATE SKIP
    LOCKED) may claim more than n rows on PostgreSQL (the subquery re-runs)."""
    spec = PipelineSpec(
        name="wide",
        steps=[PythonStep(name=f"s{i}", function=NOOP, infrastructure="inline") for i in range(40)],
    )
    with store.write() as conn:
        pv = register(conn, "default", spec)
    RunService(store).start_version(pv, {})
    worker = Worker(store, settings, concurrency=3)
    try:
        claimed = worker.turn()
        with store.read() as conn:
            running = conn.exec_driver_sql(
                "SELECT count(*) FROM nodes WHERE state IN ('running', 'succeeded')"
            ).scalar_one()
    finally:
        worker.close()
    assert claimed == 3
    assert running == 3

"""SQLite: a process's writers take turns through the store's fair lock
(``store/write_lock.py``) instead of SQLite's polling busy handler."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import sqlalchemy as sa

from ferryman.dsl.loader import load_pipeline
from ferryman.services.catalog import register
from ferryman.services.runs import RunService
from ferryman.store.engine import Store
from ferryman.store.tables import runs

PIPES = Path(__file__).parent.parent / "pipelines" / "basic.py"
THREADS = 16
EACH = 10


def test_sixteen_concurrent_creators_take_turns_without_errors(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/ferryman.db")
    try:
        store.prepare_schema()
        assert store.write_lock is not None
        with store.write() as conn:
            pv = register(conn, "default", load_pipeline(f"{PIPES}:fan"))
        svc = RunService(store)
        waits: list[float] = []
        errors: list[BaseException] = []
        most_in_line = {"n": 0}
        start = threading.Barrier(THREADS)

        def creator() -> None:
            start.wait()
            for _ in range(EACH):
                most_in_line["n"] = max(most_in_line["n"], store.write_lock.waiting)  # type: ignore[union-attr]
                t = time.perf_counter()
                try:
                    svc.start_version(pv, {"n": 3})
                except BaseException as exc:
                    errors.append(exc)
                waits.append(time.perf_counter() - t)

        threads = [threading.Thread(target=creator) for _ in range(THREADS)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(120)
        assert not errors, errors[:3]
        with store.read() as conn:
            n = conn.execute(sa.select(sa.func.count()).select_from(runs)).scalar_one()
        assert n == THREADS * EACH
        assert most_in_line["n"] >= 1  # writers really queued behind each other
        # Generous (a loaded machine): SQLite's busy handler gave seconds here.
        assert max(waits) < 10, max(waits)
    finally:
        store.dispose()


def test_postgres_stores_have_no_in_process_write_lock() -> None:
    assert Store("postgresql://nobody@127.0.0.1:1/none").write_lock is None

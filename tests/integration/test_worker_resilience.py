"""The worker survives database errors without losing outcomes or double-running."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from ferryman.dsl.loader import load_pipeline
from ferryman.engine.worker import Worker
from ferryman.services.catalog import register
from ferryman.services.queries import get_events, get_run
from ferryman.services.runs import RunService
from ferryman.settings import Settings
from ferryman.store.engine import Store

PIPES = Path(__file__).parent.parent / "pipelines" / "basic.py"


def test_transient_database_errors_are_retried(
    store: Store, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = load_pipeline(f"{PIPES}:fan")
    with store.write() as conn:
        pv = register(conn, "default", spec)
    run_id = RunService(store).start_version(pv, {"n": 6}).id
    real_write = store.write
    calls = {"n": 0}
    lock = threading.Lock()

    @contextlib.contextmanager
    def flaky_write() -> Iterator[Any]:
        with lock:
            calls["n"] += 1
            fail = calls["n"] % 3 == 0  # every third write transaction fails
        if fail:
            raise sa.exc.OperationalError("BEGIN", {}, Exception("database is restarting"))
        with real_write() as conn:
            yield conn

    monkeypatch.setattr(store, "write", flaky_write)
    Worker(store, settings).run_until({run_id}, timeout=60)
    monkeypatch.setattr(store, "write", real_write)
    with store.read() as conn:
        run = get_run(conn, run_id)
        evs = get_events(conn, run_id)
    assert calls["n"] > 3  # failures really happened
    assert run["state"] == "succeeded"
    succeeded = [e["node"] for e in evs if e["type"] == "NodeSucceeded"]
    assert sorted(succeeded) == sorted(n["name"] for n in run["nodes"])  # once each
    assert len(set(succeeded)) == len(succeeded)

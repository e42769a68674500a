"""A ``ferryman worker`` process killed with SIGKILL in the middle of a remote
job (issue 15), on SQLite and PostgreSQL: another worker adopts the step from
its stored resource meta and finishes it without a second ``create``; and a
run cancelled while its worker is dead still gets its remote job deleted, the
step ending ``cancelled``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.cli_support import ROOT, cli_environment
from tests.integration.test_plugin_tasks import FAST, job_step, pool, result, start
from tests.remote_fake import RemoteServer

from ferryman.domain.spec import PipelineSpec
from ferryman.engine.worker import Worker
from ferryman.services.runs import RunService
from ferryman.settings import Settings
from ferryman.store.engine import Store


@pytest.fixture
def remote() -> Iterator[RemoteServer]:
    srv = RemoteServer()
    yield srv
    srv.close()


def worker_process(settings: Settings, tmp_path: Path) -> subprocess.Popen[bytes]:
    env = cli_environment(
        tmp_path / "home-a",
        settings.database.url,
        FERRYMAN_LEASE_SECONDS="3",
        FERRYMAN_INFRA_CONFIG=json.dumps({"task": {"plugins": {"http_job": FAST}}}),
    )
    return subprocess.Popen(
        [sys.executable, "-m", "ferryman", "worker", "--id", "worker-a"],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def kill_after_create(p: subprocess.Popen[bytes], remote: RemoteServer) -> None:
    deadline = time.monotonic() + 60
    while not remote.fake.jobs:
        assert p.poll() is None, "worker A ended by itself"
        assert time.monotonic() < deadline, "worker A never created the job"
        time.sleep(0.05)
    time.sleep(0.5)  # its identifier is recorded in the next turn
    os.kill(p.pid, signal.SIGKILL)
    p.wait(10)


def test_a_killed_workers_remote_job_is_adopted_without_a_second_create(
    store: Store, settings: Settings, remote: RemoteServer, tmp_path: Path
) -> None:
    spec = PipelineSpec(name="k9", steps=[job_step(remote, duration=3, outputs={"ok": 1})])
    run_id = start(store, spec)
    a = worker_process(settings, tmp_path)
    try:
        kill_after_create(a, remote)
    finally:
        if a.poll() is None:
            a.kill()
    Worker(store, settings, worker_id="worker-b", infra=pool()).run_until({run_id}, timeout=90)
    r = result(store, run_id)
    assert r["state"] == "succeeded", r
    assert r["outputs"] == {"job": {"ok": 1}}
    assert r["nodes"][0]["attempt"] == 1
    assert len(remote.fake.creates) == 1 and len(remote.fake.jobs) == 1


def test_a_cancel_while_the_worker_is_dead_still_deletes(
    store: Store, settings: Settings, remote: RemoteServer, tmp_path: Path
) -> None:
    spec = PipelineSpec(name="k9c", steps=[job_step(remote, duration=120)])
    run_id = start(store, spec)
    a = worker_process(settings, tmp_path)
    try:
        kill_after_create(a, remote)
    finally:
        if a.poll() is None:
            a.kill()
    RunService(store).cancel(run_id)
    Worker(store, settings, worker_id="worker-b", infra=pool()).run_until({run_id}, timeout=90)
    r = result(store, run_id)
    assert r["state"] == "cancelled", r
    assert r["nodes"][0]["state"] == "cancelled", r["nodes"][0]
    (job_id,) = remote.fake.jobs
    deadline = time.monotonic() + 30
    while job_id not in remote.fake.deletes:
        assert time.monotonic() < deadline, "the remote job was never deleted"
        time.sleep(0.1)
    assert remote.fake.jobs[job_id].cancelled

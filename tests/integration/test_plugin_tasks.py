"""Task steps end to end (issue 15), on SQLite and PostgreSQL, against the fake
remote service on loopback: success with outputs, the remote's failure
message, cancel → delete and ``cancelled``, quota waits visible, system errors
retried without using the step's retries, the failure counter reset by any
success, and a lost worker's step adopted from its stored meta."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from tests.remote_fake import RemoteServer

from ferryman.domain.spec import PipelineSpec, TaskStep
from ferryman.engine.worker import Worker
from ferryman.infra.registry import InfraPool
from ferryman.services.catalog import register
from ferryman.services.queries import get_logs, get_run
from ferryman.services.runs import RunService
from ferryman.services.task_state import DbTaskState
from ferryman.settings import Settings
from ferryman.store.engine import Store
from ferryman.store.tables import events, nodes, utcnow

FAST = {"resync_interval": 0.1, "retry_initial": 0.05, "retry_max": 0.2}


@pytest.fixture
def remote() -> Iterator[RemoteServer]:
    srv = RemoteServer()
    yield srv
    srv.close()


def job_step(remote: RemoteServer, name: str = "job", **body: Any) -> TaskStep:
    return TaskStep(
        name=name,
        type="http_job",
        config={
            "create": {"url": remote.url + "/jobs", "body": {"duration": 0.3, **body}},
            "status_url": remote.url + "/jobs/{id}",
            "cancel_url": remote.url + "/jobs/{id}",
        },
    )


def pool(**limits: Any) -> InfraPool:
    return InfraPool({"task": {"plugins": {"http_job": {**FAST, **limits}}, "reap_interval": 0.2}})


def start(store: Store, spec: PipelineSpec) -> str:
    with store.write() as conn:
        pv = register(conn, "default", spec)
    return RunService(store).start_version(pv, {}).id


def run(store: Store, settings: Settings, spec: PipelineSpec, **limits: Any) -> dict[str, Any]:
    run_id = start(store, spec)
    Worker(store, settings, infra=pool(**limits)).run_until({run_id}, timeout=60)
    return result(store, run_id)


def result(store: Store, run_id: str) -> dict[str, Any]:
    """The run, with ``outputs`` by step name."""
    with store.read() as conn:
        r = get_run(conn, run_id)
        rows = conn.execute(sa.select(nodes.c.name, nodes.c.output).where(nodes.c.run_id == run_id))
        r["outputs"] = {n: o for n, o in rows}
    return r


def test_a_remote_job_succeeds_with_its_outputs(
    store: Store, settings: Settings, remote: RemoteServer
) -> None:
    spec = PipelineSpec(name="ok", steps=[job_step(remote, outputs={"rows": 3})])
    r = run(store, settings, spec)
    assert r["state"] == "succeeded", r
    assert r["outputs"] == {"job": {"rows": 3}}
    assert len(remote.fake.creates) == 1
    assert DbTaskState(store).counters()["http_job"]["creates"] == 1


def test_the_remotes_failure_message_is_the_steps_error(
    store: Store, settings: Settings, remote: RemoteServer
) -> None:
    spec = PipelineSpec(name="bad", steps=[job_step(remote, outcome="failed", message="OOM")])
    r = run(store, settings, spec)
    assert r["state"] == "failed"
    assert r["nodes"][0]["error"] == "OOM"


def test_a_refused_create_fails_with_the_remotes_message(
    store: Store, settings: Settings, remote: RemoteServer
) -> None:
    spec = PipelineSpec(name="refused", steps=[job_step(remote, duration="long")])
    r = run(store, settings, spec)
    assert r["state"] == "failed"
    assert "HTTP 400: duration must be a number" in r["nodes"][0]["error"]


def test_system_errors_are_retried_without_using_the_steps_retries(
    store: Store, settings: Settings, remote: RemoteServer
) -> None:
    remote.fake.fail_next = 3  # three 503s ...
    remote.fake.throttle_next = 2  # ... after two 429s with Retry-After
    remote.fake.retry_after = 0.1
    spec = PipelineSpec(name="flaky", steps=[job_step(remote)])
    # max 4 consecutive: 5 failures in a row would fail it, but the create's
    # success in between resets the count (2 + 3 spread over create and gets).
    r = run(store, settings, spec, max_system_failures=6)
    assert r["state"] == "succeeded", r
    assert r["nodes"][0]["attempt"] == 1  # no retry of the step was used
    counts = DbTaskState(store).counters()["http_job"]
    assert counts["system_failures"] == 5


def test_too_many_consecutive_system_failures_fail_the_attempt(
    store: Store, settings: Settings, remote: RemoteServer
) -> None:
    remote.fake.fail_next = 50
    spec = PipelineSpec(name="down", steps=[job_step(remote)])
    r = run(store, settings, spec, max_system_failures=3)
    assert r["state"] == "failed"
    assert "3 consecutive system failures" in r["nodes"][0]["error"]
    assert "503" in r["nodes"][0]["error"]


def test_cancel_deletes_the_remote_job_and_the_step_ends_cancelled(
    store: Store, settings: Settings, remote: RemoteServer
) -> None:
    spec = PipelineSpec(name="long", steps=[job_step(remote, duration=60)])
    run_id = start(store, spec)
    w = Worker(store, settings, infra=pool())
    t = threading.Thread(target=w.run_until, args=({run_id},), kwargs={"timeout": 60})
    t.start()
    deadline = time.monotonic() + 30
    while not remote.fake.jobs and time.monotonic() < deadline:
        time.sleep(0.05)
    assert remote.fake.jobs, "the job was never created"
    RunService(store).cancel(run_id)
    t.join(60)
    with store.read() as conn:
        r = get_run(conn, run_id)
    assert r["state"] == "cancelled"
    assert r["nodes"][0]["state"] == "cancelled"
    (job_id,) = remote.fake.jobs
    assert remote.fake.deletes == [job_id]
    assert remote.fake.jobs[job_id].cancelled


def test_quota_waits_are_visible_and_never_exceeded(
    store: Store, settings: Settings, remote: RemoteServer
) -> None:
    steps = [job_step(remote, name=f"j{i}", duration=0.5) for i in range(4)]
    spec = PipelineSpec(name="quota", steps=steps)
    run_id = start(store, spec)
    Worker(store, settings, infra=pool(max_concurrent=2), concurrency=4).run_until(
        {run_id}, timeout=60
    )
    with store.read() as conn:
        r = get_run(conn, run_id)
        lines = [x["line"] for x in get_logs(conn, run_id)]
    assert r["state"] == "succeeded", r
    assert remote.fake.max_in_flight <= 2
    assert any("waiting for quota http_job:default (2 in use of 2)" in x for x in lines), lines
    assert DbTaskState(store).counters()["http_job"]["quota_waits"] >= 1


def test_a_lost_workers_task_is_adopted_without_a_second_create(
    store: Store, settings: Settings, remote: RemoteServer
) -> None:
    spec = PipelineSpec(name="adopt", steps=[job_step(remote, duration=1.5, outputs=[1])])
    run_id = start(store, spec)
    a = Worker(store, settings, worker_id="worker-a", infra=pool())
    deadline = time.monotonic() + 20
    while not remote.fake.jobs:  # worker A created the job ...
        a.turn()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.3)
    a.turn()  # ... and recorded the identifier; then it is "killed"
    a.infra.close()
    with store.write() as conn:
        conn.execute(
            sa.update(nodes)
            .where(nodes.c.run_id == run_id)
            .values(lease_expires_at=utcnow() - dt.timedelta(seconds=1))
        )
    Worker(store, settings, worker_id="worker-b", infra=pool()).run_until({run_id}, timeout=60)
    r = result(store, run_id)
    assert r["state"] == "succeeded", r
    assert r["outputs"] == {"job": [1]}
    assert r["nodes"][0]["worker_id"] == "worker-b"
    assert len(remote.fake.jobs) == 1
    assert len(remote.fake.creates) == 1


def test_a_quota_queue_timeout_fails_the_waiting_step(
    store: Store, settings: Settings, remote: RemoteServer
) -> None:
    steps = [job_step(remote, name=f"j{i}", duration=4) for i in range(3)]
    run_id = start(store, PipelineSpec(name="qt", steps=steps))
    Worker(
        store, settings, infra=pool(max_concurrent=1, quota_queue_timeout=1.0), concurrency=3
    ).run_until({run_id}, timeout=60)
    r = result(store, run_id)
    states = sorted(n["state"] for n in r["nodes"])
    assert states == ["failed", "failed", "succeeded"], r["nodes"]
    errors = [n["error"] for n in r["nodes"] if n["state"] == "failed"]
    assert all("for quota http_job:default: gave up" in e for e in errors), errors
    assert len(remote.fake.creates) == 1


def test_a_failure_after_the_create_deletes_the_remote_job(
    store: Store, settings: Settings, remote: RemoteServer
) -> None:
    spec = PipelineSpec(name="lost", steps=[job_step(remote, duration=60)])
    run_id = start(store, spec)
    w = Worker(store, settings, infra=pool(max_system_failures=3))
    t = threading.Thread(target=w.run_until, args=({run_id},), kwargs={"timeout": 60})
    t.start()
    deadline = time.monotonic() + 30
    while not remote.fake.jobs and time.monotonic() < deadline:
        time.sleep(0.05)
    assert remote.fake.jobs, "the job was never created"
    remote.fake.fail_next = 3  # the next three reads fail: the attempt fails
    t.join(60)
    r = result(store, run_id)
    assert r["state"] == "failed", r
    assert "3 consecutive system failures" in r["nodes"][0]["error"]
    (job_id,) = remote.fake.jobs
    assert remote.fake.deletes == [job_id]  # nothing is left running remotely
    assert remote.fake.jobs[job_id].cancelled
    assert DbTaskState(store).pending_deletes(10) == []


def test_a_quota_wait_shows_in_the_steps_view_and_one_event(
    store: Store, settings: Settings, remote: RemoteServer
) -> None:
    steps = [job_step(remote, name=f"j{i}", duration=1.5) for i in range(2)]
    run_id = start(store, PipelineSpec(name="wait", steps=steps))
    w = Worker(store, settings, infra=pool(max_concurrent=1), concurrency=2)
    t = threading.Thread(target=w.run_until, args=({run_id},), kwargs={"timeout": 60})
    t.start()
    seen: list[str] = []
    deadline = time.monotonic() + 30
    while not seen and time.monotonic() < deadline:
        with store.read() as conn:
            seen = [n["message"] for n in get_run(conn, run_id)["nodes"] if n["message"]]
        time.sleep(0.05)
    t.join(60)
    assert seen == ["waiting for quota http_job:default (1 in use of 1)"]
    with store.read() as conn:
        r = get_run(conn, run_id)
        waits = conn.execute(
            sa.select(events.c.node, events.c.message, events.c.data).where(
                events.c.run_id == run_id, events.c.type == "NodeWaiting"
            )
        ).all()
    assert r["state"] == "succeeded", r
    assert all(n["message"] is None for n in r["nodes"])  # cleared once it ran
    # once per wait, not once per poll of the quota (it waited ~1.5 s)
    assert len(waits) == 1, waits
    node, message, data = waits[0]
    assert node in {"j0", "j1"}
    assert message == seen[0]
    assert data == {"reason": "quota", "key": "http_job:default", "in_use": 1, "limit": 1}

"""The kubernetes infrastructure against the kmock emulator (a real HTTP server).

The official client talks HTTP to ``kmock.KubernetesEmulator`` on loopback; a
test-written Job controller and kubelet (``tests/k8s_fake.py``) create the
pods, run the containers' commands as local processes, serve their logs and
move pods Pending → Running → Succeeded/Failed. No real cluster is involved.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kmock
import kubernetes_validate
import pytest
import sqlalchemy as sa
from kubernetes.client import BatchV1Api, CoreV1Api

from ferryman.domain.spec import (
    ContainerStep,
    FunctionRef,
    ParamSpec,
    PipelineSpec,
    PythonStep,
    StepSpec,
)
from ferryman.engine.worker import Worker
from ferryman.infra.base import EXIT_KILLED, EXIT_LOST, MASK, StepLaunch
from ferryman.infra.kubernetes import KubernetesConfig, KubernetesInfrastructure
from ferryman.infra.registry import InfraPool
from ferryman.services.catalog import register
from ferryman.services.queries import get_logs, get_run
from ferryman.services.runs import RunService
from ferryman.settings import Settings
from ferryman.store.engine import Store
from ferryman.store.tables import nodes

sys.path.insert(0, str(Path(__file__).parent.parent))
from k8s_fake import JOBS, PODS, FakeCluster

TOKEN = "t0ken-very-secret-123"
BASIC = Path(__file__).parent.parent / "pipelines" / "basic.py"


@pytest.fixture
def cluster() -> Iterator[FakeCluster]:
    with FakeCluster() as c:
        yield c
        assert c.errors == []


def make_infra(cluster: FakeCluster, **cfg: Any) -> KubernetesInfrastructure:
    cfg.setdefault("namespace", "ferry")
    cfg.setdefault("watch_seconds", 2)  # the emulator ends watches after this, as servers do
    config = KubernetesConfig(api_server=cluster.url, token=TOKEN, **cfg)
    return KubernetesInfrastructure(config)


def container(script: str, **kw: Any) -> StepSpec:
    return ContainerStep(
        name=kw.pop("name", "work"),
        image=kw.pop("image", "python:3.12"),
        command=["python", "-c", script],
        **kw,
    )


def launch_of(step: StepSpec, **kw: Any) -> StepLaunch:
    base: dict[str, Any] = dict(
        run_id="run-1",
        node=step.name,
        attempt=1,
        pipeline="etl",
        namespace="default",
        step=step,
        inputs={},
        params={"who": "world"},
        nonce="nonce1",
    )
    base.update(kw)
    return StepLaunch(**base)


class Lines:
    """A sink that records lines and lets a test wait for one."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()

    def __call__(self, stream: str, line: str) -> None:
        assert stream == "stdout"
        with self._cond:
            self.lines.append(line)
            self._cond.notify_all()

    def wait_for(self, line: str, timeout: float = 20) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: line in self.lines, timeout), self.lines


def requests_of(cluster: FakeCluster, action: Any, resource: Any) -> list[Any]:
    return [r for r in cluster.requests() if r.action == action and r.resource == resource]


def stacks() -> str:
    """Every thread's stack (shown when a watch hangs)."""
    import traceback

    frames = sys._current_frames()
    return "\n".join(
        f"--- {t.name}\n" + "".join(traceback.format_stack(frames[t.ident]))
        for t in threading.enumerate()
        if t.ident in frames and "ferryman" in "".join(traceback.format_stack(frames[t.ident]))
    )


def watch_in_thread(
    infra: KubernetesInfrastructure, ident: str
) -> tuple[threading.Thread, dict[str, Any]]:
    """``infra.watch(ident)`` in a thread; the box gets ``r`` (the Result) or ``exc``."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["r"] = infra.watch(ident)
        except BaseException as exc:
            box["exc"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, box


def run_step(
    infra: KubernetesInfrastructure, launch: StepLaunch, sink: Lines | None = None
) -> tuple[str, Any, Lines]:
    sink = sink or Lines()
    ident = infra.start(launch, sink)
    try:
        return ident, infra.watch(ident), sink
    finally:
        infra.close()


def validate_strict(manifest: dict[str, Any]) -> None:
    kubernetes_validate.validate(manifest, kubernetes_validate.latest_version(), strict=True)


# -- the life of a Job ---------------------------------------------------------------


def test_success_streams_logs_in_order_and_sends_a_valid_job(cluster: FakeCluster) -> None:
    script = "for i in range(40): print(f'line {i}', flush=True)\nprint('hello {{ params.who }}')"
    infra = make_infra(cluster, labels={"team": "Data Eng"})
    ident, result, sink = run_step(infra, launch_of(container(script)))
    assert result.status_code == 0, result
    assert result.reason is None
    assert sink.lines == [f"line {i}" for i in range(40)] + ["hello world"]
    ns, name = ident.split("/")
    assert ns == "ferry" and name.startswith("etl-work-")
    (create,) = requests_of(cluster, kmock.action.CREATE, JOBS)
    assert create.headers["Authorization"] == f"Bearer {TOKEN}"
    sent = json.loads(create.body)
    validate_strict(sent)
    assert sent["metadata"]["generateName"] == "etl-work-"
    assert sent["spec"]["backoffLimit"] == 0
    labels = sent["metadata"]["labels"]
    assert labels["ferryman.io/run-id"] == "run-1"
    assert labels["ferryman.io/step"] == "work"
    assert labels["ferryman.io/attempt"] == "1"
    assert labels["team"] == "Data-Eng"
    assert sent["spec"]["template"]["metadata"]["labels"] == labels
    env = {e["name"]: e["value"] for e in sent["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["FERRYMAN_RUN_ID"] == "run-1" and "FERRYMAN_STEP_PAYLOAD" not in env


def test_failure_reports_the_containers_exit_code(cluster: FakeCluster) -> None:
    script = "import sys; print('bad input', flush=True); sys.exit(3)"
    _, result, sink = run_step(make_infra(cluster), launch_of(container(script)))
    assert result.status_code == 3
    assert result.reason is not None and "exit code 3" in result.reason
    assert "BackoffLimitExceeded" in result.reason
    assert sink.lines == ["bad input"]


@pytest.mark.parametrize(
    ("attr", "expected"),
    [
        ("unpullable", 'ImagePullBackOff: Back-off pulling image "nope:1"'),
        ("unschedulable", "Unschedulable: 0/3 nodes are available: 3 Insufficient cpu."),
    ],
)
def test_pod_that_never_starts_fails_with_its_reason(
    cluster: FakeCluster, attr: str, expected: str
) -> None:
    getattr(cluster, attr).add("nope:1")
    infra = make_infra(cluster, pod_watch_timeout_seconds=1.5)
    t0 = time.monotonic()
    ident, result, _ = run_step(infra, launch_of(container("print(1)", image="nope:1")))
    took = time.monotonic() - t0
    assert result.status_code == EXIT_LOST
    assert result.reason is not None
    assert "did not start within 1.5s" in result.reason
    assert expected in result.reason
    assert 1.5 <= took < 15
    # the stuck Job is not left behind
    (delete,) = requests_of(cluster, kmock.action.DELETE, JOBS)
    assert delete.name == ident.split("/")[1]
    assert cluster.settled(JOBS) == []


def test_watch_that_expires_or_answers_410_resumes(cluster: FakeCluster, tmp_path: Path) -> None:
    gone = {
        "type": "ERROR",
        "object": {
            "apiVersion": "v1",
            "kind": "Status",
            "status": "Failure",
            "reason": "Expired",
            "message": "too old resource version: 1 (2000)",
            "code": 410,
        },
    }

    def inject(k: Any) -> None:
        # 1st watch of the job: the stream ends without an event (server timeout)
        k[kmock.action.WATCH, JOBS] << iter([b"", lambda: asyncio.sleep(0.3)])
        # 2nd watch: the resourceVersion is too old
        k[kmock.action.WATCH, JOBS] << iter([b"", gone])

    cluster.call(inject)
    go = tmp_path / "go"
    script = (
        f"import os, time\nprint('a', flush=True)\nwhile not os.path.exists({str(go)!r}): "
        "time.sleep(0.05)\nprint('b')\nraise SystemExit(4)"
    )
    infra = make_infra(cluster, watch_seconds=1)
    ident = infra.start(launch_of(container(script)), sink := Lines())
    t, box = watch_in_thread(infra, ident)
    # the step runs until the ended watch and the 410 have both happened
    deadline = time.monotonic() + 30
    while len(requests_of(cluster, kmock.action.WATCH, JOBS)) < 3:
        assert time.monotonic() < deadline, "the watch was not resumed"
        time.sleep(0.05)
    go.touch()
    t.join(60)
    assert "exc" not in box and not t.is_alive(), (box, stacks())
    infra.close()
    result = box["r"]
    assert result.status_code == 4
    assert sink.lines == ["a", "b"]
    watches = requests_of(cluster, kmock.action.WATCH, JOBS)
    lists = requests_of(cluster, kmock.action.LIST, JOBS)
    assert len(lists) >= 2  # the 410 made it list again
    assert all(w.params.get("timeoutSeconds") == "1" for w in watches)
    assert "resourceVersion" in watches[1].params  # resumed where it was


def test_a_broken_log_stream_is_reopened_without_duplicates(cluster: FakeCluster) -> None:
    # the first two log connections break after 3 and 5 lines
    cluster.log_cuts.extend([3, 5])
    script = (
        "import time\n"
        "for i in range(4): print(f'early {i}', flush=True)\n"
        "time.sleep(1)\n"
        "for i in range(4): print(f'late {i}', flush=True)\n"
    )
    _, result, sink = run_step(make_infra(cluster), launch_of(container(script)))
    assert result.status_code == 0
    assert sink.lines == [f"early {i}" for i in range(4)] + [f"late {i}" for i in range(4)]
    logs = [r for r in cluster.requests() if r.subresource == "log"]
    assert len(logs) >= 3
    assert all(r.params.get("timestamps") == "true" for r in logs)


def test_job_deleted_from_outside_fails_the_step(cluster: FakeCluster) -> None:
    infra = make_infra(cluster)
    sink = Lines()
    ident = infra.start(
        launch_of(container("import time; print('up', flush=True); time.sleep(60)")), sink
    )
    t, box = watch_in_thread(infra, ident)
    sink.wait_for("up")
    ns, name = ident.split("/")
    assert cluster.delete(JOBS, ns, name) == 200
    t.join(60)
    assert "exc" not in box and not t.is_alive(), (box, stacks())
    infra.close()
    result = box["r"]
    assert result.status_code == EXIT_LOST
    assert f"job {ident} was deleted from outside" in result.reason
    assert cluster.objects(PODS) == []  # its pod went with it


def test_pod_deleted_from_outside_fails_the_step(cluster: FakeCluster) -> None:
    infra = make_infra(cluster)
    sink = Lines()
    ident = infra.start(
        launch_of(container("import time; print('up', flush=True); time.sleep(60)")), sink
    )
    t, box = watch_in_thread(infra, ident)
    sink.wait_for("up")
    (pod,) = cluster.objects(PODS)
    assert cluster.delete(PODS, "ferry", pod["metadata"]["name"]) == 200
    t.join(60)
    assert "exc" not in box and not t.is_alive(), (box, stacks())
    infra.close()
    result = box["r"]
    assert result.status_code == EXIT_LOST
    assert f"pod {pod['metadata']['name']} was deleted" in result.reason
    assert "BackoffLimitExceeded" in result.reason


def test_kill_deletes_the_job_with_foreground_propagation(cluster: FakeCluster) -> None:
    infra = make_infra(cluster)
    sink = Lines()
    ident = infra.start(
        launch_of(container("import time; print('up', flush=True); time.sleep(60)")), sink
    )
    t, box = watch_in_thread(infra, ident)
    sink.wait_for("up")
    infra.kill(ident, 3)
    t.join(60)
    assert "exc" not in box and not t.is_alive(), (box, stacks())
    infra.kill(ident, 3)  # idempotent: already gone
    infra.close()
    assert box["r"].status_code == EXIT_KILLED
    assert "killed" in box["r"].reason
    deletes = requests_of(cluster, kmock.action.DELETE, JOBS)
    assert len(deletes) == 2
    assert deletes[0].name == ident.split("/")[1]
    assert deletes[0].params["propagationPolicy"] == "Foreground"
    assert deletes[0].params["gracePeriodSeconds"] == "3"
    assert cluster.settled(JOBS) == [] and cluster.settled(PODS) == []


def test_kill_while_the_pod_is_pending(cluster: FakeCluster) -> None:
    cluster.unpullable.add("private/img:1")
    infra = make_infra(cluster, pod_watch_timeout_seconds=120)
    ident = infra.start(launch_of(container("print(1)", image="private/img:1")), Lines())
    t, box = watch_in_thread(infra, ident)
    deadline = time.monotonic() + 20
    while not requests_of(cluster, kmock.action.WATCH, PODS):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    t0 = time.monotonic()
    infra.kill(ident, 0)
    t.join(30)
    assert "exc" not in box and not t.is_alive(), (box, stacks())
    infra.close()
    assert time.monotonic() - t0 < 10  # not the 120 s pending timeout
    assert box["r"].status_code == EXIT_KILLED
    assert cluster.settled(JOBS) == []


def test_attach_after_a_worker_restart_replays_the_log(cluster: FakeCluster) -> None:
    script = "import time\nprint('one', flush=True)\ntime.sleep(1)\nprint('two')"
    first = make_infra(cluster)
    sink1 = Lines()
    ident = first.start(launch_of(container(script)), sink1)
    t = threading.Thread(target=first.watch, args=(ident,), daemon=True)
    t.start()
    sink1.wait_for("one")
    first.close()  # the worker "dies": its log stream stops

    second = make_infra(cluster)
    sink2 = Lines()
    assert second.attach(ident, sink2) is True
    result = second.watch(ident)
    second.close()
    assert result.status_code == 0
    assert sink2.lines == ["one", "two"]  # replayed from the start: nothing lost
    assert KubernetesInfrastructure.reattachable


def test_start_error_is_clear_and_never_shows_secrets(cluster: FakeCluster) -> None:
    def refuse(k: Any) -> None:
        (
            k[kmock.action.CREATE, JOBS]
            << 403
            << {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "message": 'jobs.batch is forbidden: User "ci" cannot create resource "jobs"',
                "reason": "Forbidden",
                "code": 403,
            }
        )

    cluster.call(refuse)
    infra = make_infra(cluster)
    launch = launch_of(container("print(1)"), secrets={"API_KEY": "hunter2-hunter2"})
    with pytest.raises(RuntimeError) as exc:
        infra.start(launch, Lines())
    infra.close()
    text = str(exc.value)
    assert "403" in text and "cannot create resource" in text
    assert "hunter2" not in text and TOKEN not in text


def test_secrets_reach_the_container_but_never_the_preview(cluster: FakeCluster) -> None:
    step = container(
        "import os; print(len(os.environ['API_KEY']))", secrets=["API_KEY"], env={"MODE": "x"}
    )
    launch = launch_of(step, secrets={"API_KEY": "hunter2-hunter2"}, env={"MODE": "x"})
    infra = make_infra(cluster)
    preview = infra.preview(launch)
    text = json.dumps(preview)
    assert "hunter2" not in text and TOKEN not in text
    env = preview["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "API_KEY", "value": MASK} in env
    validate_strict(preview)
    _, result, sink = run_step(infra, launch)
    assert result.status_code == 0 and sink.lines == ["15"]
    assert TOKEN not in repr(infra.config) and TOKEN not in str(infra.config.model_dump())


def test_kubeconfig_credentials(cluster: FakeCluster, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": cluster.url}}],
                "users": [{"name": "me", "user": {"token": TOKEN}}],
                "contexts": [
                    {"name": "other", "context": {"cluster": "fake", "user": "me"}},
                    {"name": "ctx", "context": {"cluster": "fake", "user": "me"}},
                ],
                "current-context": "other",
            }
        )
    )
    cfg = KubernetesConfig(kubeconfig=str(kubeconfig), context="ctx", namespace="ferry")
    _, result, sink = run_step(KubernetesInfrastructure(cfg), launch_of(container("print('k')")))
    assert result.status_code == 0 and sink.lines == ["k"]
    (create,) = requests_of(cluster, kmock.action.CREATE, JOBS)
    assert create.headers["Authorization"] == f"Bearer {TOKEN}"

    missing = KubernetesInfrastructure(KubernetesConfig(kubeconfig=str(tmp_path / "nope")))
    with pytest.raises(RuntimeError, match="kubernetes credentials could not be loaded"):
        missing.start(launch_of(container("print(1)")), Lines())


# -- a whole pipeline through the engine -----------------------------------------------


def test_pipeline_on_kubernetes_through_the_engine(
    cluster: FakeCluster, store: Store, settings: Settings
) -> None:
    spec = PipelineSpec(
        name="k8s-demo",
        infrastructure="kubernetes",
        labels={"owner": "data team"},
        params=[ParamSpec(name="who", type="string")],
        steps=[
            ContainerStep(
                name="greet",
                image="python:3.12",
                command=["python", "-c", "print('hello {{ params.who }}'); print('bye')"],
            ),
            PythonStep(
                name="square",
                function=FunctionRef(file=str(BASIC), qualname="square_sum"),
                inputs={"xs": [1, 2, 3], "shard": 0, "shards": 1},
                depends_on=["greet"],
            ),
            ContainerStep(
                name="report",
                image="python:3.12",
                inputs={"total": {"$step": "square"}},
                depends_on=["square"],
                command=["python", "-c", "print('total={{ inputs.total }}')"],
            ),
            ContainerStep(
                name="broken",
                image="python:3.12",
                command=["python", "-c", "import sys; print('oops'); sys.exit(2)"],
                depends_on=["report"],
            ),
        ],
    )
    with store.write() as conn:
        pv = register(conn, "default", spec)
    run_id = RunService(store).start_version(pv, {"who": "k8s"}).id
    pool = InfraPool(
        {
            "kubernetes": {
                "api_server": cluster.url,
                "token": TOKEN,
                "namespace": "ferry",
                "image": "ferryman-runtime:1",
                # the emulator's watch does not replay changes made between a list
                # and the watch after it (a real API server does): a short watch
                # bounds how long such a miss can last
                "watch_seconds": 5,
            }
        }
    )
    Worker(store, settings, infra=pool).run_until({run_id}, timeout=90)
    with store.read() as conn:
        run = get_run(conn, run_id)
        logs = {
            n: [r["line"] for r in get_logs(conn, run_id, node=n)]
            for n in ("greet", "square", "report", "broken")
        }
    nodes = {n["name"]: n for n in run["nodes"]}
    assert run["state"] == "failed", run
    assert nodes["greet"]["state"] == "succeeded"
    assert nodes["square"]["state"] == "succeeded"
    assert nodes["report"]["state"] == "succeeded"
    assert nodes["broken"]["state"] == "failed"
    assert "exit code 2" in nodes["broken"]["error"]
    assert logs["greet"] == ["hello k8s", "bye"]
    assert "shard 0 of 1" in logs["square"] and "to stderr" in logs["square"]
    assert not any("ferryman-result" in line for line in logs["square"])
    assert logs["report"] == ["total=14"]
    assert logs["broken"] == ["oops"]
    # every attempt's Job was a valid Job in the configured namespace
    creates = requests_of(cluster, kmock.action.CREATE, JOBS)
    assert len(creates) == 4
    for req in creates:
        sent = json.loads(req.body)
        validate_strict(sent)
        assert sent["metadata"]["namespace"] == "ferry"
        assert sent["metadata"]["labels"]["owner"] == "data-team"
        assert sent["metadata"]["labels"]["ferryman.io/pipeline"] == "k8s-demo"
    python_job = next(json.loads(r.body) for r in creates if "square" in r.body.decode())
    main = python_job["spec"]["template"]["spec"]["containers"][0]
    assert main["image"] == "ferryman-runtime:1"
    assert main["command"] == ["python", "-m", "ferryman.runtime"]


def test_step_timeout_deletes_the_job_through_the_engine(
    cluster: FakeCluster, store: Store, settings: Settings
) -> None:
    assert BatchV1Api and CoreV1Api  # imported up front: the import is slow, the timeout short
    spec = PipelineSpec(
        name="slow",
        infrastructure="kubernetes",
        steps=[
            ContainerStep(
                name="sleepy",
                image="python:3.12",
                timeout=3,
                command=["python", "-c", "import time; print('zz', flush=True); time.sleep(60)"],
            )
        ],
    )
    with store.write() as conn:
        pv = register(conn, "default", spec)
    run_id = RunService(store).start_version(pv, {}).id
    pool = InfraPool({"kubernetes": {"api_server": cluster.url, "token": TOKEN}})
    t0 = time.monotonic()
    Worker(store, settings, infra=pool).run_until({run_id}, timeout=60)
    assert time.monotonic() - t0 < 30
    with store.read() as conn:
        run = get_run(conn, run_id)
        ident = conn.execute(
            sa.select(nodes.c.infra_kind, nodes.c.infra_id).where(nodes.c.run_id == run_id)
        ).one()
        lines = [r["line"] for r in get_logs(conn, run_id, node="sleepy")]
    (node,) = run["nodes"]
    assert node["state"] == "failed" and "timed out after 3s" in node["error"]
    assert lines == ["zz"]
    (delete,) = requests_of(cluster, kmock.action.DELETE, JOBS)
    assert delete.params["propagationPolicy"] == "Foreground"
    assert ident.infra_kind == "kubernetes"
    assert ident.infra_id == f"default/{delete.name}"  # stored as soon as the job existed
    assert cluster.settled(JOBS) == [] and cluster.settled(PODS) == []


def test_another_process_can_watch_a_job_with_a_named_container(cluster: FakeCluster) -> None:
    base = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {},
        "spec": {"template": {"spec": {"containers": [{"name": "step"}]}}},
    }
    starter = make_infra(cluster, job_manifest=base)
    ident = starter.start(launch_of(container("raise SystemExit(5)")), Lines())
    starter.close()
    watcher = make_infra(cluster)  # e.g. a server asked about it: no logs, same outcome
    result = watcher.watch(ident)
    watcher.close()
    assert result.status_code == 5 and "exit code 5" in result.reason
    (create,) = requests_of(cluster, kmock.action.CREATE, JOBS)
    validate_strict(json.loads(create.body))

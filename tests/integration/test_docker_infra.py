"""The docker infrastructure for real: a real daemon, real containers, whole
pipelines through the real engine on SQLite and PostgreSQL.

The daemon is started by ``scripts/ensure-docker.sh`` when none runs; the
test image is built locally with ``docker import`` (see ``tests/docker_support``).
Containers use ``network_mode: none`` (the test daemon has no bridge).
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import docker
import pytest
from tests.docker_support import (
    ROOT,
    busybox_image,
    docker_client,
    python_volumes,
    remove_labelled,
    wait_for,
)

from ferryman.domain.options import RunOptions
from ferryman.domain.spec import ContainerStep, FunctionRef, PipelineSpec, PythonStep, StepSpec
from ferryman.engine.worker import Worker
from ferryman.infra.base import RESULT_MARKER, StepLaunch
from ferryman.infra.docker import DockerConfig, DockerInfrastructure
from ferryman.infra.docker.names import container_name
from ferryman.services.catalog import register
from ferryman.services.queries import get_logs, get_run
from ferryman.services.runs import RunService
from ferryman.settings import Settings
from ferryman.store.engine import Store

__all__ = ["busybox_image", "docker_client"]  # fixtures used by name

pytestmark = pytest.mark.timeout(180)

BASIC = ROOT / "tests" / "pipelines" / "basic.py"
RUN_LABEL = "io.ferryman.run-id"


@pytest.fixture
def dsettings(settings: Settings, docker_client: Any) -> Settings:
    """The engine's settings with the docker infrastructure on network ``none``."""
    return settings.updated(infra_config={"docker": {"network_mode": "none"}})


def box(name: str, image: str, *args: str, **kw: Any) -> StepSpec:
    """A container step running ``sh -c ARGS`` on the test image."""
    return ContainerStep(
        name=name,
        image=image,
        command=["sh", "-c"],
        args=list(args),
        infrastructure="docker",
        **kw,
    )


def create(store: Store, spec: PipelineSpec, **kw: Any) -> str:
    with store.write() as conn:
        pv = register(conn, "default", spec)
    if "options" in kw:
        kw["options"] = RunOptions.model_validate(kw["options"])
    started = RunService(store).start_version(pv, kw.pop("params", {}), **kw)
    assert started.created
    return started.id


def run_spec(store: Store, settings: Settings, spec: PipelineSpec, **kw: Any) -> dict[str, Any]:
    run_id = create(store, spec, **kw)
    Worker(store, settings).run_until({run_id}, timeout=120)
    with store.read() as conn:
        return get_run(conn, run_id)


def leftovers(client: Any, run_id: str) -> list[Any]:
    """The containers of a run that still exist."""
    return list(client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={run_id}"}))


def node(run: dict[str, Any], name: str) -> dict[str, Any]:
    return next(n for n in run["nodes"] if n["name"] == name)


def logs(store: Store, run_id: str, name: str) -> list[tuple[str, str]]:
    with store.read() as conn:
        return [(r["stream"], r["line"]) for r in get_logs(conn, run_id, node=name)]


def in_background(store: Store, settings: Settings, run_id: str) -> threading.Thread:
    worker = Worker(store, settings)
    t = threading.Thread(target=worker.run_until, args=({run_id},), kwargs={"timeout": 120})
    t.start()
    return t


def running_container(store: Store, run_id: str, name: str) -> str:
    """Wait until the step's container id is stored on its node; return it."""
    found: list[str] = []

    def started() -> bool:
        with store.read() as conn:
            n = node(get_run(conn, run_id), name)
        if n["infra_id"] and n["state"] == "running":
            found.append(n["infra_id"])
            return True
        return False

    wait_for(started, timeout=60)
    return found[0]


def test_pipeline_env_labels_templates_and_logs(
    store: Store, dsettings: Settings, busybox_image: str, docker_client: Any
) -> None:
    spec = PipelineSpec(
        name="docker-basic",
        params=[{"name": "who", "type": "string"}],  # type: ignore[list-item]
        labels={"example.com/team": "data"},
        steps=[
            PythonStep(
                name="make",
                function=FunctionRef(file=str(BASIC), qualname="ok"),
                inputs={"tag": {"$param": "who"}},
                infrastructure="inline",
            ),
            box(
                "show",
                busybox_image,
                "echo arg={{ params.who }} up={{ inputs.up }} step={{ step }}; "
                'echo "env=$GREETING drop=${DROP:-unset} run=$FERRYMAN_RUN_ID"; '
                "echo to-stderr >&2",
                inputs={"up": {"$step": "make"}},
                depends_on=["make"],
                env={"GREETING": "hello {{ params.who }}", "DROP": None},
                infra_overrides={"auto_remove": False, "env": {"DROP": "from-config"}},
            ),
        ],
    )
    run_id = create(store, spec, params={"who": "ann"}, labels={"owner": "bob"})
    try:
        Worker(store, dsettings).run_until({run_id}, timeout=120)
        with store.read() as conn:
            run = get_run(conn, run_id)
        assert run["state"] == "succeeded", node(run, "show")["error"]
        show = node(run, "show")
        assert show["infra_kind"] == "docker" and show["exit_code"] == 0
        lines = logs(store, run_id, "show")
        assert ("stdout", "arg=ann up=ann step=show") in lines
        assert ("stdout", f"env=hello ann drop=unset run={run_id}") in lines
        assert ("stderr", "to-stderr") in lines
        # the container was kept (auto_remove off): its labels, by its stored id
        c = docker_client.containers.get(show["infra_id"])
        labels = c.labels
        assert labels[RUN_LABEL] == run_id
        assert labels["io.ferryman.step"] == "show"
        assert labels["io.ferryman.attempt"] == "1"
        assert labels["io.ferryman.pipeline"] == "docker-basic"
        assert labels["io.ferryman.namespace"] == "default"
        assert labels["com.example.team"] == "data" and labels["owner"] == "bob"
        assert c.name == container_name("docker-basic", "show", run_id, 1)
        assert c.attrs["HostConfig"]["NetworkMode"] == "none"
    finally:
        remove_labelled(docker_client, RUN_LABEL, run_id)


def test_yaml_pipeline_with_dollar_placeholders(
    store: Store, dsettings: Settings, busybox_image: str, tmp_path: Path
) -> None:
    from ferryman.dsl.loader import load_pipeline

    path = tmp_path / "p.yaml"
    path.write_text(
        f"""
name: docker-yaml
infrastructure: docker
params:
  source: {{type: string, default: db}}
steps:
  - name: make
    function: {BASIC}:ok
    infrastructure: inline
    inputs: {{tag: "${{params.source}}"}}
  - name: report
    kind: container
    image: {busybox_image}
    inputs: {{make: "${{steps.make}}"}}
    command: ["echo", "made ${{steps.make}} from ${{params.source}}"]
"""
    )
    spec = load_pipeline(str(path))
    run = run_spec(store, dsettings, spec, params={"source": "files"})
    assert run["state"] == "succeeded", node(run, "report")["error"]
    assert ("stdout", "made files from files") in logs(store, run["id"], "report")


def test_non_zero_exit_fails_the_step_with_its_code(
    store: Store, dsettings: Settings, busybox_image: str, docker_client: Any
) -> None:
    spec = PipelineSpec(
        name="docker-fail",
        steps=[
            box("bad", busybox_image, "echo failing; exit 3"),
            box("after", busybox_image, "true", depends_on=["bad"]),
        ],
    )
    run = run_spec(store, dsettings, spec)
    assert run["state"] == "failed"
    bad = node(run, "bad")
    assert bad["state"] == "failed" and bad["exit_code"] == 3
    assert bad["error"] == "exit code 3"
    assert node(run, "after")["state"] == "skipped"
    assert ("stdout", "failing") in logs(store, run["id"], "bad")
    # auto_remove (the default) removed the container after collecting everything
    assert (
        docker_client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={run['id']}"}) == []
    )


def test_timeout_stops_the_container(
    store: Store, dsettings: Settings, busybox_image: str, docker_client: Any
) -> None:
    spec = PipelineSpec(
        name="docker-timeout",
        steps=[box("slow", busybox_image, "echo started; sleep 60", timeout=2)],
    )
    t0 = time.monotonic()
    run = run_spec(store, dsettings, spec)
    elapsed = time.monotonic() - t0
    slow = node(run, "slow")
    assert run["state"] == "failed" and slow["state"] == "failed"
    assert slow["error"].startswith("timed out after 2s")
    assert elapsed < 30, elapsed  # sleep 60 was stopped (grace 2s), not waited for
    assert ("stdout", "started") in logs(store, run["id"], "slow")
    assert (
        docker_client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={run['id']}"}) == []
    )


def test_cancel_stops_the_container(
    store: Store, dsettings: Settings, busybox_image: str, docker_client: Any
) -> None:
    spec = PipelineSpec(
        name="docker-cancel",
        steps=[
            box(
                "long",
                busybox_image,
                "trap 'echo got-term; exit 143' TERM; echo up; while true; do sleep 0.1; done",
                infra_overrides={"auto_remove": False},
            )
        ],
    )
    run_id = create(store, spec)
    try:
        t = in_background(store, dsettings, run_id)
        cid = running_container(store, run_id, "long")
        assert docker_client.containers.get(cid).status == "running"
        RunService(store).cancel(run_id)
        t.join(60)
        assert not t.is_alive()
        with store.read() as conn:
            run = get_run(conn, run_id)
        assert run["state"] == "cancelled"
        assert node(run, "long")["state"] == "cancelled"
        c = docker_client.containers.get(cid)
        assert c.status == "exited"
        assert c.attrs["State"]["ExitCode"] == 143  # it got SIGTERM first (graceful)
        wait_for(lambda: ("stdout", "got-term") in logs(store, run_id, "long"), timeout=5)
    finally:
        remove_labelled(docker_client, RUN_LABEL, run_id)


def test_name_conflict_takes_the_next_number(
    store: Store, dsettings: Settings, busybox_image: str, docker_client: Any
) -> None:
    spec = PipelineSpec(
        name="docker-names",
        steps=[box("dup", busybox_image, "echo ran", infra_overrides={"auto_remove": False})],
    )
    run_id = create(store, spec)
    taken = container_name("docker-names", "dup", run_id, 1)
    squatter = docker_client.containers.create(
        busybox_image, ["true"], name=taken, network_mode="none", labels={RUN_LABEL: run_id}
    )
    try:
        Worker(store, dsettings).run_until({run_id}, timeout=120)
        with store.read() as conn:
            run = get_run(conn, run_id)
        assert run["state"] == "succeeded", node(run, "dup")["error"]
        c = docker_client.containers.get(node(run, "dup")["infra_id"])
        assert c.name == f"{taken}-2" and c.id != squatter.id
        assert ("stdout", "ran") in logs(store, run_id, "dup")
    finally:
        remove_labelled(docker_client, RUN_LABEL, run_id)


def test_volume_is_mounted(
    store: Store, dsettings: Settings, busybox_image: str, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "hello.txt").write_text("hello from the host\n")
    spec = PipelineSpec(
        name="docker-volume",
        steps=[
            box(
                "read",
                busybox_image,
                "cat /data/hello.txt; touch /data/new 2>/dev/null || echo read-only; "
                "echo mode=$MODE",
                infra_overrides={"env": {"MODE": "step"}},
            )
        ],
    )
    # per-run overrides (the run's ``infra_overrides`` option) win over the step's
    overrides = {"read": {"volumes": [f"{data}:/data:ro"], "env": {"MODE": "run"}}}
    run = run_spec(store, dsettings, spec, options={"infra_overrides": overrides})
    assert run["state"] == "succeeded", node(run, "read")["error"]
    lines = logs(store, run["id"], "read")
    assert ("stdout", "hello from the host") in lines
    assert ("stdout", "read-only") in lines
    assert ("stdout", "mode=run") in lines
    assert not (data / "new").exists()


def test_bad_volume_spec_is_a_clear_step_error(
    store: Store, dsettings: Settings, busybox_image: str
) -> None:
    spec = PipelineSpec(
        name="docker-badvol",
        steps=[
            box("s", busybox_image, "true", infra_overrides={"volumes": ["rel/path:/x", "/a:b:rx"]})
        ],
    )
    run = run_spec(store, dsettings, spec)
    err = node(run, "s")["error"]
    assert run["state"] == "failed"
    assert err.startswith("could not start on docker: invalid docker settings")
    assert "'rel/path:/x'" in err and "'/a:b:rx'" in err and "'rx' must be 'ro' or 'rw'" in err
    assert "Traceback" not in err


def test_pull_never_with_missing_image_is_a_clear_step_error(
    store: Store, dsettings: Settings, busybox_image: str
) -> None:
    spec = PipelineSpec(
        name="docker-never",
        steps=[
            ContainerStep(
                name="s",
                image="ferryman-test/does-not-exist:9",
                infrastructure="docker",
                infra_overrides={"pull_policy": "never"},
            )
        ],
    )
    run = run_spec(store, dsettings, spec)
    err = node(run, "s")["error"]
    assert run["state"] == "failed"
    assert "image 'ferryman-test/does-not-exist:9' is not present" in err
    assert "pull policy is 'never'" in err


def test_container_removed_from_outside_fails_the_step(
    store: Store, dsettings: Settings, busybox_image: str, docker_client: Any
) -> None:
    spec = PipelineSpec(
        name="docker-vanish", steps=[box("victim", busybox_image, "echo up; sleep 60")]
    )
    run_id = create(store, spec)
    t = in_background(store, dsettings, run_id)
    cid = running_container(store, run_id, "victim")
    docker_client.containers.get(cid).remove(force=True)
    t.join(60)
    assert not t.is_alive()
    with store.read() as conn:
        run = get_run(conn, run_id)
    victim = node(run, "victim")
    assert run["state"] == "failed" and victim["state"] == "failed"
    assert "disappeared" in victim["error"] and cid[:12] in victim["error"]


def _launch(image: str, script: str, run_id: str = "attach0000000001") -> StepLaunch:
    step = ContainerStep(name="s", image=image, command=["sh", "-c"], args=[script])
    return StepLaunch(
        run_id=run_id,
        node="s",
        attempt=1,
        pipeline="docker-attach",
        namespace="default",
        step=step,
        inputs={},
        params={},
        nonce="n1",
    )


def test_attach_after_worker_loss_streams_and_returns_the_exit_code(
    busybox_image: str, docker_client: Any
) -> None:
    cfg = DockerConfig(network_mode="none")
    first = DockerInfrastructure(cfg)
    seen1: list[tuple[str, str]] = []
    script = (
        "echo before; printf '\\036ferryman-result n1 {\"ok\":true}\\n'; "
        "sleep 3; echo after; echo late-err >&2; exit 4"
    )
    launch = _launch(busybox_image, script)
    cid = first.start(launch, lambda s, line: seen1.append((s, line)))
    try:
        wait_for(lambda: ("stdout", "before") in seen1, timeout=30)
        first.close()  # the worker is "lost": its streams and handles are gone
        second = DockerInfrastructure(cfg)
        seen2: list[tuple[str, str]] = []
        time.sleep(1.2)  # the lost worker stored "before" more than a second ago
        since = dt.datetime.now(dt.UTC)
        assert second.attach(cid, lambda s, line: seen2.append((s, line)), since) is True
        result = second.watch(cid)
        assert result.status_code == 4 and result.identifier == cid
        assert ("stdout", "after") in seen2 and ("stderr", "late-err") in seen2
        assert ("stdout", "before") not in seen2  # not streamed twice: older than since
        assert ("stdout", RESULT_MARKER + 'n1 {"ok":true}') in seen2  # recovered
        with pytest.raises(docker.errors.NotFound):
            docker_client.containers.get(cid)  # auto_remove after the watch
        second.close()
    finally:
        remove_labelled(docker_client, RUN_LABEL, launch.run_id)


def test_kill_of_a_container_started_elsewhere(busybox_image: str, docker_client: Any) -> None:
    cfg = DockerConfig(network_mode="none", auto_remove=False)
    starter = DockerInfrastructure(cfg)
    launch = _launch(busybox_image, "sleep 60", run_id="killelsewhere001")
    try:
        cid = starter.start(launch, lambda s, line: None)
        other = DockerInfrastructure(cfg)
        t0 = time.monotonic()
        other.kill(cid, 1)
        assert time.monotonic() - t0 < 20
        result = starter.watch(cid)
        assert result.status_code == 137  # sh ignores SIGTERM as pid 1: SIGKILL after grace
        other.kill(cid, 1)  # idempotent
        starter.close()
        other.close()
    finally:
        remove_labelled(docker_client, RUN_LABEL, launch.run_id)


def test_silence_longer_than_the_api_timeout_is_fine(
    busybox_image: str, docker_client: Any
) -> None:
    """The API timeout bounds API calls, never a quiet step or its log streams."""
    infra = DockerInfrastructure(DockerConfig(network_mode="none", api_timeout=1))
    seen: list[tuple[str, str]] = []
    launch = _launch(busybox_image, "echo a; sleep 3; echo b", run_id="quietstep0000001")
    try:
        cid = infra.start(launch, lambda s, line: seen.append((s, line)))
        assert infra.watch(cid).status_code == 0
        assert seen == [("stdout", "a"), ("stdout", "b")]
    finally:
        infra.close()
        remove_labelled(docker_client, RUN_LABEL, launch.run_id)


def test_failed_pull_is_a_clear_error_without_the_password(
    busybox_image: str, docker_client: Any
) -> None:
    """``always`` pulls even a present-or-not image; a registry that does not
    answer (a closed loopback port) fails the start, credentials masked."""
    infra = DockerInfrastructure(
        DockerConfig(
            network_mode="none",
            pull_policy="always",
            registry={"username": "bot", "password": "hunter2", "registry": "127.0.0.1:1"},  # type: ignore[arg-type]
        )
    )
    launch = _launch(busybox_image, "true", run_id="pullfails0000001")
    launch.step = ContainerStep(name="s", image="127.0.0.1:1/ferryman/absent:1")
    try:
        with pytest.raises(RuntimeError) as exc:
            infra.start(launch, lambda s, line: None)
        msg = str(exc.value)
        assert msg.startswith("could not pull image '127.0.0.1:1/ferryman/absent:1' (always)")
        assert "hunter2" not in msg
        assert "hunter2" not in repr(infra.preview(launch))
    finally:
        infra.close()


def test_missing_executable_is_a_clear_start_error(busybox_image: str, docker_client: Any) -> None:
    infra = DockerInfrastructure(DockerConfig(network_mode="none"))
    launch = _launch(busybox_image, "true", run_id="noexec0000000001")
    launch.step = ContainerStep(name="s", image=busybox_image, command=["/nope"])
    try:
        with pytest.raises(RuntimeError, match=r"could not start the container: .*nope"):
            infra.start(launch, lambda s, line: None)
        assert leftovers(docker_client, launch.run_id) == []  # not left behind
    finally:
        infra.close()
        remove_labelled(docker_client, RUN_LABEL, launch.run_id)


@pytest.mark.skipif(sys.platform != "linux", reason="mounts this Linux host's Python")
def test_python_step_runs_inside_a_container(
    store: Store, dsettings: Settings, busybox_image: str
) -> None:
    """A python step on docker: the runtime runs inside the container and its
    result comes back through the log stream. The image is the busybox one
    with this machine's Python and this worktree mounted read-only."""
    python = str(ROOT / ".venv" / "bin" / "python")
    if not os.path.exists(python):
        pytest.skip("needs the worktree's .venv (scripts/setup.sh)")
    spec = PipelineSpec(
        name="docker-python",
        steps=[
            PythonStep(
                name="numbers",
                function=FunctionRef(file=str(BASIC), qualname="numbers"),
                inputs={"n": 7},
                infrastructure="inline",
            ),
            PythonStep(
                name="square",
                function=FunctionRef(file=str(BASIC), qualname="square_sum"),
                inputs={"xs": {"$step": "numbers"}, "shard": 1, "shards": 2},
                depends_on=["numbers"],
                infrastructure="docker",
                infra_overrides={
                    "image": busybox_image,
                    "python": python,
                    "volumes": python_volumes(),
                },
            ),
        ],
    )
    run = run_spec(store, dsettings, spec)
    square = node(run, "square")
    assert run["state"] == "succeeded", square["error"]
    assert square["infra_kind"] == "docker" and square["has_output"]
    lines = logs(store, run["id"], "square")
    assert ("stdout", "shard 1 of 2") in lines and ("stderr", "to stderr") in lines
    assert not any(RESULT_MARKER in line for _, line in lines)
    with store.read() as conn:
        import sqlalchemy as sa

        from ferryman.store.tables import nodes

        out = conn.execute(
            sa.select(nodes.c.output).where(nodes.c.run_id == run["id"], nodes.c.name == "square")
        ).scalar_one()
    assert out == 1 + 9 + 25  # odd squares below 7


def test_a_lost_workers_container_is_adopted_through_the_engine(
    store: Store, dsettings: Settings, busybox_image: str, docker_client: Any
) -> None:
    """Worker A starts the container and is lost (no more turns, lease
    expired); worker B re-attaches to the same container: one container,
    one attempt, every line stored."""
    import datetime as _dt

    import sqlalchemy as sa

    from ferryman.store.tables import nodes, utcnow

    spec = PipelineSpec(
        name="docker-adopt",
        steps=[box("job", busybox_image, "echo first; sleep 3; echo second; exit 0")],
    )
    run_id = create(store, spec)
    # Worker A lives on in this test process (a real lost worker would not): it
    # must not remove the container when its own watch sees it end.
    keep = {"docker": {"network_mode": "none", "auto_remove": False}}
    a = Worker(store, dsettings.updated(infra_config=keep), worker_id="worker-a")
    deadline = time.monotonic() + 60
    while True:
        a.turn()
        with store.read() as conn:
            n = node(get_run(conn, run_id), "job")
        if n["infra_id"]:
            break
        assert time.monotonic() < deadline, "worker A never started the container"
        time.sleep(0.05)
    cid = n["infra_id"]
    # worker A is gone: its Docker connections with it (else its still-running
    # watch thread, which only exists because A lives on in this test process,
    # would remove the container when it ends)
    a.infra.close()
    with store.write() as conn:
        conn.execute(
            sa.update(nodes)
            .where(nodes.c.run_id == run_id)
            .values(lease_expires_at=utcnow() - _dt.timedelta(seconds=1))
        )
    try:
        Worker(store, dsettings, worker_id="worker-b").run_until({run_id}, timeout=120)
        with store.read() as conn:
            run = get_run(conn, run_id)
        job = node(run, "job")
        assert run["state"] == "succeeded", (run["error"], job, logs(store, run_id, "job"))
        assert (job["attempt"], job["worker_id"], job["infra_id"]) == (1, "worker-b", cid)
        lines = [line for _, line in logs(store, run_id, "job")]
        assert "second" in lines
        assert any("re-attached to docker" in line for line in lines)
        assert len(leftovers(docker_client, run_id)) <= 1  # no second container
    finally:
        for c in leftovers(docker_client, run_id):
            c.remove(force=True)

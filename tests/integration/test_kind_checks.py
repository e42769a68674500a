"""Step kinds end to end: a step whose kind its infrastructure does not run is
refused at deploy (CLI and REST API) and preview time, and fails at launch
when only a run's override sends it there; identifiers are recorded by
capability, not by infrastructure name."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import sqlalchemy as sa
from starlette.exceptions import StarletteDeprecationWarning

from ferryman.api.app import create_app
from ferryman.domain.options import RunOptions
from ferryman.domain.spec import ContainerStep, FunctionRef, PipelineSpec, PythonStep
from ferryman.engine.worker import Worker
from ferryman.services.auth import Role, create_api_token, create_user
from ferryman.services.catalog import register
from ferryman.services.queries import get_run
from ferryman.services.runs import RunService
from ferryman.settings import Settings
from ferryman.store.engine import Store
from ferryman.store.tables import nodes

with warnings.catch_warnings():
    # see tests/integration/test_api_runs.py
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

ROOT = Path(__file__).resolve().parents[2]
BASIC = ROOT / "tests" / "pipelines" / "basic.py"
NOOP = FunctionRef(module="os.path", qualname="join")

CONTAINER_ON_PROCESS = """
name: boxed
steps:
  - {name: ok, function: os.path:join, infrastructure: inline}
  - {name: box, kind: container, image: busybox, command: ["true"]}
"""


def ferryman(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.update(
        FERRYMAN_HOME=str(tmp_path / "home"),
        FERRYMAN_DATABASE_URL=f"sqlite:///{tmp_path}/db.sqlite",
    )
    return subprocess.run(
        [sys.executable, "-m", "ferryman", *args],
        env=env, capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip


def test_deploy_and_preview_refuse_a_container_step_on_process(tmp_path: Path) -> None:
    f = tmp_path / "boxed.yaml"
    f.write_text(CONTAINER_ON_PROCESS)
    message = (
        "step 'box' is a container step: the process infrastructure runs python steps "
        "only; container steps run on docker or kubernetes"
    )
    r = ferryman(tmp_path, "deploy", str(f))
    assert r.returncode == 2
    assert message in " ".join(r.stderr.split()), r.stderr
    r = ferryman(tmp_path, "preview", str(f))
    assert r.returncode == 2
    assert message in " ".join(r.stderr.split()), r.stderr
    # what the step's infrastructure does run is fine
    f.write_text(CONTAINER_ON_PROCESS + "infrastructure: docker\n")
    assert ferryman(tmp_path, "preview", str(f)).returncode == 0


def test_the_api_refuses_to_register_a_step_its_infrastructure_cannot_run(
    settings: Settings, store: Store
) -> None:
    with store.write() as conn:
        user = create_user(conn, "dev-bot", None, Role.DEVELOPER)  # registers code
        _, token = create_api_token(conn, user["id"], "tests")
    spec = PipelineSpec(
        name="boxed",
        steps=[
            PythonStep(name="ok", function=NOOP, infrastructure="inline"),
            ContainerStep(name="box", image="b"),
        ],
    )
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(settings, store)) as api:
        r = api.post(
            "/namespaces/default/pipelines", json=spec.model_dump(mode="json"), headers=headers
        )
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["message"] == "1 step(s) cannot run on their infrastructure"
        assert error["details"] == [
            {
                "path": "steps.1",
                "reason": "step 'box' is a container step: the process infrastructure runs "
                "python steps only; container steps run on docker or kubernetes",
            }
        ]
        docker = spec.model_copy(update={"infrastructure": "docker"})
        r = api.post(
            "/namespaces/default/pipelines", json=docker.model_dump(mode="json"), headers=headers
        )
        assert r.status_code == 201, r.text


def test_a_run_override_to_an_infrastructure_that_cannot_run_the_step_fails_it_at_launch(
    store: Store, settings: Settings
) -> None:
    spec = PipelineSpec(
        name="boxed",
        infrastructure="docker",
        steps=[ContainerStep(name="box", image="busybox", command=["true"])],
    )
    with store.write() as conn:
        pv = register(conn, "default", spec)
    run_id = (
        RunService(store).start_version(pv, {}, options=RunOptions(infrastructure="process")).id
    )
    Worker(store, settings).run_until({run_id}, timeout=60)
    with store.read() as conn:
        run = get_run(conn, run_id)
    (box,) = run["nodes"]
    assert run["state"] == "failed" and box["state"] == "failed"
    assert box["error"] == (
        "could not start on process: step 'box' is a container step: the process "
        "infrastructure runs python steps only; container steps run on docker or kubernetes"
    )


def test_identifiers_are_recorded_when_the_infrastructure_says_so(
    store: Store, settings: Settings
) -> None:
    fn = FunctionRef(file=str(BASIC), qualname="numbers")
    spec = PipelineSpec(
        name="where",
        steps=[
            PythonStep(name="thread", function=fn, inputs={"n": 2}, infrastructure="inline"),
            PythonStep(name="proc", function=fn, inputs={"n": 2}, infrastructure="process"),
        ],
    )
    with store.write() as conn:
        pv = register(conn, "default", spec)
    run_id = RunService(store).start_version(pv, {}).id
    Worker(store, settings).run_until({run_id}, timeout=60)
    with store.read() as conn:
        rows = dict(
            conn.execute(
                sa.select(nodes.c.name, nodes.c.infra_id).where(nodes.c.run_id == run_id)
            ).all()
        )
        assert get_run(conn, run_id)["state"] == "succeeded"
    assert rows["thread"] is None  # an inline thread cannot be killed from elsewhere
    assert rows["proc"] is not None and rows["proc"].startswith("process:")

"""``ferryman preview`` as a user runs it: what each step would launch, with
secrets masked, nothing started. The docker and kubernetes previews are
tested with their infrastructures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from ferryman.domain.spec import ContainerStep, PipelineSpec
from ferryman.infra.base import MASK
from ferryman.infra.preview import UnknownStep, preview_pipeline

ROOT = Path(__file__).resolve().parents[2]
PIPES = ROOT / "tests" / "pipelines" / "basic.py"
SECRET = "s3cr3t-value-that-must-not-show"


def ferryman(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.update(
        FERRYMAN_HOME=str(tmp_path / "home"),
        FERRYMAN_DATABASE_URL=f"sqlite:///{tmp_path}/db.sqlite",
        PIPELINE_TEST_SECRET=SECRET,
    )
    return subprocess.run(
        [sys.executable, "-m", "ferryman", *args],
        env=env, capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip


def test_preview_prints_each_steps_process_launch(tmp_path: Path) -> None:
    r = ferryman(tmp_path, "preview", f"{PIPES}:fan", "-p", "n=4")
    assert r.returncode == 0, r.stderr
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    # numbers and total are inline steps, the three shards processes
    assert [d["kind"] for d in docs] == ["inline", "process", "process", "process", "inline"]
    shard = docs[1]
    assert shard["command"][-2:] == ["-m", "ferryman.runtime"]
    assert shard["env"]["FERRYMAN_STEP"].startswith("square_sum")
    assert shard["payload"]["inputs"]["xs"] == "<output of numbers>"
    assert shard["payload"]["inputs"]["shard"] == 0
    assert "--- # step total on inline" in r.stdout
    r = ferryman(tmp_path, "preview", f"{PIPES}:fan", "--infrastructure", "process", "--json")
    assert {d["infrastructure"] for d in json.loads(r.stdout)} == {"process"}
    assert not (tmp_path / "db.sqlite").exists()  # a file pipeline needs no database


def test_preview_masks_secrets_and_selects_one_step(tmp_path: Path) -> None:
    r = ferryman(tmp_path, "preview", f"{PIPES}:secretive", "--step", "leaky", "--json")
    assert r.returncode == 0, r.stderr
    assert SECRET not in r.stdout
    (doc,) = json.loads(r.stdout)
    assert doc["step"] == "leaky" and doc["infrastructure"] == "process"
    assert doc["launch"]["env"]["PIPELINE_TEST_SECRET"] == MASK


def test_preview_errors_are_one_line(tmp_path: Path) -> None:
    r = ferryman(tmp_path, "preview", f"{PIPES}:fan", "--step", "nope")
    assert r.returncode == 2
    assert "no step 'nope'" in r.stderr and "numbers" in r.stderr
    assert "Traceback" not in r.stderr
    r = ferryman(tmp_path, "preview", f"{PIPES}:fan", "-p", "n=lots")
    assert r.returncode == 2 and "n" in r.stderr and "Traceback" not in r.stderr
    r = ferryman(tmp_path, "preview", f"{PIPES}:fan", "--infrastructure", "teleport")
    assert r.returncode == 2 and "unknown infrastructure 'teleport'" in r.stderr


def test_preview_of_a_deployed_pipeline(tmp_path: Path) -> None:
    assert ferryman(tmp_path, "deploy", str(PIPES)).returncode == 0
    r = ferryman(tmp_path, "preview", "fan", "--json")
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)) == 5


def test_preview_pipeline_function() -> None:
    spec = PipelineSpec(
        name="p",
        steps=[ContainerStep(name="a", image="busybox", command=["true"])],
    )
    try:
        preview_pipeline(spec, {}, step="b")
    except UnknownStep as exc:
        assert "steps: a" in str(exc)
    else:
        raise AssertionError("an unknown step must be refused")


CONTAINER_YAML = """
name: kdemo
params:
  day:
    type: str
    default: "2024-01-01"
steps:
  - name: hello
    kind: container
    image: busybox:1.36
    command: ["sh", "-c"]
    args: ["echo {{ params.day }}"]
    infrastructure: INFRA
    secrets: [PIPELINE_TEST_SECRET]
"""


def test_preview_prints_the_kubernetes_job_manifest(tmp_path: Path) -> None:
    from kubernetes_validate import validate

    f = tmp_path / "k.yaml"
    f.write_text(CONTAINER_YAML.replace("INFRA", "kubernetes"))
    r = ferryman(tmp_path, "preview", str(f), "-p", "day=2024-05-01")
    assert r.returncode == 0, r.stderr
    assert SECRET not in r.stdout
    (job,) = [d for d in yaml.safe_load_all(r.stdout) if d]
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    (c,) = job["spec"]["template"]["spec"]["containers"]
    assert c["args"] == ["echo 2024-05-01"]
    assert {"name": "PIPELINE_TEST_SECRET", "value": MASK} in c["env"]
    validate(job, "1.30", strict=True)  # the real schema (raises if invalid)


def test_preview_prints_the_docker_container_settings(tmp_path: Path) -> None:
    f = tmp_path / "d.yaml"
    f.write_text(CONTAINER_YAML.replace("INFRA", "docker"))
    r = ferryman(tmp_path, "preview", str(f))
    assert r.returncode == 0, r.stderr
    assert SECRET not in r.stdout
    (box,) = [d for d in yaml.safe_load_all(r.stdout) if d]
    assert box["kind"] == "docker" and box["image"] == "busybox:1.36"
    assert box["command"] == ["echo 2024-01-01"] and box["env"]["PIPELINE_TEST_SECRET"] == MASK
    assert box["labels"]["io.ferryman.step"] == "hello"

"""The exported CronJob's container, run in a real container (the local
busybox test image with this machine's Python and the worktree mounted):
it exits 0 when the run succeeds and non-zero when it fails, and ends by
itself (no container stays up)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import docker
import pytest
from test_cronjob_export import BOT, OPTS, schedule
from tests.docker_support import ROOT, busybox_image, docker_client, python_volumes

from ferryman.dsl.loader import load_pipeline
from ferryman.infra.kubernetes.cronjob import cronjob_manifest

__all__ = ["busybox_image", "docker_client"]
VENV_BIN = ROOT / ".venv" / "bin"


def _container_exit(client: docker.DockerClient, image: str, m: dict[str, Any]) -> tuple[int, str]:
    (c,) = m["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    env = {"PATH": f"{VENV_BIN}:/usr/bin:/bin"}
    for e in c["env"]:
        env[e["name"]] = "test-key-value" if "valueFrom" in e else e["value"]
    container = client.containers.run(
        image, c["command"], environment=env, volumes=python_volumes(), detach=True,
        labels={"ferryman-test": "cronjob"}, network_mode="none",
    )  # fmt: skip
    try:
        status = container.wait(timeout=180)
        logs = container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)
    return int(status["StatusCode"]), logs


@pytest.mark.skipif(not (VENV_BIN / "ferryman").exists(), reason="needs the worktree's .venv")
def test_exported_container_exits_with_the_runs_result(
    docker_client: docker.DockerClient, busybox_image: str
) -> None:
    pipeline = load_pipeline(f"{BOT}:cron_bot")
    good, _ = cronjob_manifest(schedule(), pipeline, OPTS)
    bad, _ = cronjob_manifest(schedule(params={"config": {"action": "fail"}}), pipeline, OPTS)
    code, logs = _container_exit(docker_client, busybox_image, good)
    assert code == 0, logs
    code, logs = _container_exit(docker_client, busybox_image, bad)
    assert code == 1, logs
    assert "the API said no" in logs and "test-key-value" not in logs
    assert Path(BOT).is_relative_to(ROOT)

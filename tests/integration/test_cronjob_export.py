"""``ferryman export cronjob``: the manifest's mapping of every policy, the
built-in lint, ``kubernetes-validate --strict``, and the exported container
command run in a real process: exit 0 when the run succeeds, non-zero when
it fails."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.cli_support import cli_environment, ferryman

from ferryman.domain.schedules import ScheduleSpec
from ferryman.dsl.loader import load_pipeline
from ferryman.infra.kubernetes.cronjob import (
    MAX_NAME,
    CronJobOptions,
    ExportError,
    cronjob_manifest,
    cronjob_name,
    kubernetes_schedule,
    lint_cronjob,
)
from ferryman.store.engine import Store

BOT = Path(__file__).parent.parent / "pipelines" / "cron_bot.py"
VALIDATE = Path(sys.executable).parent / "kubernetes-validate"
OPTS = CronJobOptions(image="registry.example/bots:1", ref=f"{BOT}:cron_bot")


def schedule(**kw: Any) -> ScheduleSpec:
    return ScheduleSpec.model_validate(
        {"name": "nightly", "pipeline": "cron_bot", "cron": "0 3 * * 1-5",
         "timezone": "Asia/Kolkata", "params": {"config": {"action": "report"}}, **kw}
    )  # fmt: skip


def manifest(**kw: Any) -> dict[str, Any]:
    m, _ = cronjob_manifest(schedule(**kw), load_pipeline(f"{BOT}:cron_bot"), OPTS)
    return m


@pytest.mark.parametrize(
    ("overlap", "policy"),
    [("allow", "Allow"), ("skip", "Forbid"), ("cancel_other", "Replace"),
     ("buffer_one", "Forbid"), ("buffer_all", "Forbid")],
)  # fmt: skip
def test_overlap_maps_to_concurrency_policy(overlap: str, policy: str) -> None:
    assert manifest(overlap=overlap)["spec"]["concurrencyPolicy"] == policy


def test_the_manifest_carries_every_setting() -> None:
    m = manifest(catchup="latest", catchup_window=900, paused=True)
    spec = m["spec"]
    assert (spec["schedule"], spec["timeZone"]) == ("0 3 * * 1-5", "Asia/Kolkata")
    assert spec["startingDeadlineSeconds"] == 900 and spec["suspend"] is True
    job = spec["jobTemplate"]["spec"]
    assert job["activeDeadlineSeconds"] == 120 and job["backoffLimit"] == 0
    assert job["ttlSecondsAfterFinished"] == 86400
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (c,) = pod["containers"]
    assert c["command"][:3] == ["ferryman", "run", f"{BOT}:cron_bot"]
    assert c["command"][3:] == ["-p", 'config={"action":"report"}']
    (secret,) = [e for e in c["env"] if e["name"] == "CAST_API_KEY"]
    assert secret == {"name": "CAST_API_KEY", "valueFrom": {
        "secretKeyRef": {"name": "nightly-secrets", "key": "CAST_API_KEY"}}}  # fmt: skip
    assert manifest(catchup="none")["spec"]["startingDeadlineSeconds"] == 60


@pytest.mark.parametrize(
    ("kw", "want"),
    [
        ({"cron": None, "interval": 300}, ("*/5 * * * *", "Etc/UTC")),
        ({"cron": None, "interval": 7200}, ("0 */2 * * *", "Etc/UTC")),
        ({"cron": None, "interval": 86400}, ("0 0 * * *", "Etc/UTC")),
    ],
)
def test_intervals_that_fit_cron(kw: dict[str, Any], want: tuple[str, str]) -> None:
    assert kubernetes_schedule(schedule(**kw)) == want


@pytest.mark.parametrize(
    ("kw", "says"),
    [
        ({"cron": None, "interval": 45}, "cannot be written as Kubernetes cron"),
        ({"cron": None, "interval": 420}, "cannot be written as Kubernetes cron"),
        ({"cron": "*/10 * * * * *"}, "no seconds field"),
    ],
)
def test_what_kubernetes_cannot_schedule_is_refused(kw: dict[str, Any], says: str) -> None:
    with pytest.raises(ExportError, match=says):
        manifest(**kw)


def test_names_are_dns_1123_and_at_most_52() -> None:
    long = cronjob_name("The Very Long Schedule Name Of The Quarterly Finance Report Bot v2")
    assert len(long) <= MAX_NAME and long == long.lower()
    assert long != cronjob_name(
        "The Very Long Schedule Name Of The Quarterly Finance Report Bot v3"
    )
    assert cronjob_name("Nightly_Sync!") == "nightly-sync"


def test_lint_refuses_keep_alive_commands_missing_deadlines_and_inline_secrets() -> None:
    m = manifest()
    c = m["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert lint_cronjob(m, ["CAST_API_KEY"]) == []
    c["command"] = ["sh", "-c", "python bot.py && sleep infinity"]
    c["env"].append({"name": "CAST_API_KEY", "value": "xoxb-123"})
    del m["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"]
    del m["spec"]["startingDeadlineSeconds"]
    m["spec"]["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"] = "OnFailure"
    problems = " | ".join(lint_cronjob(m, ["CAST_API_KEY"]))
    for says in ("keeps running", "activeDeadlineSeconds", "startingDeadlineSeconds",
                 "restartPolicy", "inline"):  # fmt: skip
        assert says in problems


def test_a_pipeline_without_timeout_needs_a_deadline() -> None:
    spec = load_pipeline(f"{BOT}:cron_bot").model_copy(update={"timeout": None})
    with pytest.raises(ExportError, match="--active-deadline"):
        cronjob_manifest(schedule(), spec, OPTS)


def _export(env: dict[str, str], tmp_path: Path, name: str, action: str) -> dict[str, Any]:
    r = ferryman(env, "schedules", "add", name, "cron_bot", "--cron", "*/5 * * * *",
                 "-p", f'config={{"action": "{action}"}}')  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = tmp_path / f"{name}.yaml"
    r = ferryman(env, "export", "cronjob", name, "--image", "bots:1",
                 "--ref", f"{BOT}:cron_bot", "-o", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr
    v = subprocess.run([str(VALIDATE), "--strict", str(out)], capture_output=True, text=True,
                       timeout=120)  # fmt: skip
    assert v.returncode == 0, v.stdout + v.stderr
    loaded: dict[str, Any] = yaml.safe_load(out.read_text())
    return loaded


def _run_container_command(m: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """The exported container, as a local process: its command, its env (the
    secretKeyRef filled in as the kubelet would) and a fresh /tmp."""
    (c,) = m["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert c["command"][0] == "ferryman"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERRYMAN_")}
    for e in c["env"]:
        if "valueFrom" in e:
            env[e["name"]] = "test-key-value"
        else:
            env[e["name"]] = e["value"].replace("/tmp", str(tmp_path / "pod-tmp"))
    return subprocess.run([sys.executable, "-m", "ferryman", *c["command"][1:]], env=env,
                          capture_output=True, text=True, timeout=180)  # fmt: skip


def test_exported_command_exits_with_the_runs_result(
    store: Store, db_url: str, tmp_path: Path
) -> None:
    env = cli_environment(tmp_path / "home", db_url)
    assert ferryman(env, "deploy", str(BOT)).returncode == 0
    good = _export(env, tmp_path, "report", "report")
    bad = _export(env, tmp_path, "failing", "fail")
    ok = _run_container_command(good, tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    failed = _run_container_command(bad, tmp_path)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "the API said no" in failed.stdout + failed.stderr
    assert "test-key-value" not in ok.stdout + ok.stderr + failed.stdout + failed.stderr


def test_export_mistakes_exit_2(store: Store, db_url: str, tmp_path: Path) -> None:
    env = cli_environment(tmp_path / "home", db_url)
    assert ferryman(env, "deploy", str(BOT)).returncode == 0
    r = ferryman(env, "schedules", "add", "fast", "cron_bot", "--every", "45",
                 "-p", 'config={"action": "report"}')  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = ferryman(env, "export", "cronjob", "fast", "--image", "x", "--ref", f"{BOT}:cron_bot")
    assert r.returncode == 2 and "cannot be written as Kubernetes cron" in r.stderr
    r = ferryman(env, "export", "cronjob", "ghost", "--image", "x")
    assert r.returncode == 2 and "no schedule 'ghost'" in r.stderr

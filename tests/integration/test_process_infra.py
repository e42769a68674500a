"""The process infrastructure: real subprocesses running ``python -m ferryman.runtime``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from ferryman.domain.spec import ContainerStep, FunctionRef, PythonStep
from ferryman.infra.base import MASK, PAYLOAD_ENV, OutputCapture, StepLaunch
from ferryman.infra.process import ProcessConfig, ProcessInfrastructure, parse_identifier

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX process groups")


class Collector:
    """A log sink that records lines and lets a test wait for one."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []
        self._cond = threading.Condition()

    def __call__(self, stream: str, line: str) -> None:
        with self._cond:
            self.lines.append((stream, line))
            self._cond.notify_all()

    def stream(self, name: str) -> list[str]:
        with self._cond:
            return [line for s, line in self.lines if s == name]

    def wait_for(self, predicate: Any, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for _, line in self.lines:
                    if predicate(line):
                        return line
                left = deadline - time.monotonic()
                assert left > 0, f"line not seen; got {self.lines}"
                self._cond.wait(left)


def make_launch(
    tmp_path: Path,
    source: str,
    *,
    inputs: dict[str, Any] | None = None,
    env: dict[str, str | None] | None = None,
    secrets: dict[str, str] | None = None,
    kind: str = "python",
) -> StepLaunch:
    f = tmp_path / "proc_steps.py"
    f.write_text(textwrap.dedent(source))
    if kind == "container":
        spec = ContainerStep(name="s", image="alpine:3", command=["true"])
    else:
        spec = PythonStep(name="s", function=FunctionRef(file=str(f), qualname="step"))
    return StepLaunch(
        run_id="run-1",
        node="s",
        attempt=2,
        pipeline="pipe",
        namespace="team",
        step=spec,
        inputs=inputs or {},
        params={},
        nonce="nonce-42",
        env=env or {},
        secrets=secrets or {},
    )


def run(
    infra: ProcessInfrastructure, launch: StepLaunch
) -> tuple[int, OutputCapture, Collector, str]:
    logs = Collector()
    capture = OutputCapture(launch.nonce, logs, launch.mask)
    identifier = infra.start(launch, capture)
    result = infra.watch(identifier)
    assert result.identifier == identifier
    return result.status_code, capture, logs, identifier


def gone(pid: int, timeout: float = 5.0) -> bool:
    """The process no longer exists (or is a zombie nobody reaped yet)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def infra(tmp_path: Path) -> ProcessInfrastructure:
    root = tmp_path / "work"
    root.mkdir()
    return ProcessInfrastructure(ProcessConfig(workdir_root=str(root)))


def test_each_step_runs_in_a_temporary_workdir_removed_after(
    infra: ProcessInfrastructure, tmp_path: Path
) -> None:
    # (order of output lines, values, kill, unknown identifiers: tests/contract)
    launch = make_launch(tmp_path, "import os\n\ndef step():\n    return os.getcwd()\n")
    code, capture, logs, identifier = run(infra, launch)
    assert code == 0, logs.lines
    assert parse_identifier(identifier) is not None
    assert capture.result_json is not None
    cwd = Path(json.loads(capture.result_json)["value"])
    assert cwd.name.startswith("ferryman-")
    assert cwd.parent == tmp_path / "work"
    assert not cwd.exists()  # removed after watch


def test_env_merge_unset_and_secret_masking(
    infra: ProcessInfrastructure, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FERRY_TEST_REMOVE_ME", "present")
    monkeypatch.setenv("FERRY_TEST_KEEP", "kept")
    monkeypatch.setenv("FERRYMAN_STEP_ENV_PASSTHROUGH", "FERRY_TEST_*")  # else not passed
    monkeypatch.setenv("WORKER_ONLY_VAR", "not for steps")
    monkeypatch.setenv("FERRYMAN_JWT_SECRET", "the server's own")
    launch = make_launch(
        tmp_path,
        """
        import os

        def step():
            print("token is " + os.environ["API_TOKEN"])
            keys = ["FERRY_TEST_REMOVE_ME", "FERRY_TEST_KEEP", "STEP_VAR", "FERRYMAN_RUN_ID",
                    "FERRYMAN_STEP", "FERRYMAN_ATTEMPT", "FERRYMAN_PIPELINE",
                    "FERRYMAN_NAMESPACE", "FERRYMAN_LIFELINE_FD", "WORKER_ONLY_VAR",
                    "FERRYMAN_JWT_SECRET", "FERRYMAN_STEP_ENV_PASSTHROUGH"]
            return {k: os.environ.get(k) for k in keys}
        """,
        env={"FERRY_TEST_REMOVE_ME": None, "STEP_VAR": "v1"},
        secrets={"API_TOKEN": "s3cr3t-value"},
    )
    code, capture, logs, _ = run(infra, launch)
    assert code == 0, logs.lines
    assert logs.stream("stdout") == [f"token is {MASK}"]
    assert "s3cr3t-value" not in repr(logs.lines)
    assert capture.result_json is not None
    assert json.loads(capture.result_json)["value"] == {
        "FERRY_TEST_REMOVE_ME": None,
        "FERRY_TEST_KEEP": "kept",
        "STEP_VAR": "v1",
        "FERRYMAN_RUN_ID": "run-1",
        "FERRYMAN_STEP": "s",
        "FERRYMAN_ATTEMPT": "2",
        "FERRYMAN_PIPELINE": "pipe",
        "FERRYMAN_NAMESPACE": "team",
        "FERRYMAN_LIFELINE_FD": None,  # consumed by the runtime
        "WORKER_ONLY_VAR": None,  # the worker's environment is an allow-list
        "FERRYMAN_JWT_SECRET": None,  # never ferryman's settings
        "FERRYMAN_STEP_ENV_PASSTHROUGH": None,
    }


def test_preview_masks_secrets_and_omits_the_process_env(
    infra: ProcessInfrastructure, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FERRY_TEST_HOST_ONLY", "host")
    launch = make_launch(
        tmp_path,
        "def step(x):\n    return x\n",
        inputs={"x": "uses s3cr3t-value inline"},
        env={"STEP_VAR": "v1", "GONE": None},
        secrets={"API_TOKEN": "s3cr3t-value"},
    )
    preview = infra.preview(launch)
    text = json.dumps(preview)
    assert "s3cr3t-value" not in text
    assert preview["kind"] == "process"
    assert preview["command"] == [sys.executable, "-m", "ferryman.runtime"]
    assert preview["cwd"] == "<temporary directory>"
    env = preview["env"]
    assert "FERRY_TEST_HOST_ONLY" not in env
    assert "PATH" not in env
    assert env["API_TOKEN"] == MASK
    assert env["STEP_VAR"] == "v1"
    assert env["GONE"] is None
    assert env["FERRYMAN_RUN_ID"] == "run-1"
    assert json.loads(env[PAYLOAD_ENV])["nonce"] == "nonce-42"
    assert preview["payload"]["inputs"] == {"x": f"uses {MASK} inline"}
    assert preview["payload"]["function"]["qualname"] == "step"


def test_non_json_return_value(infra: ProcessInfrastructure, tmp_path: Path) -> None:
    launch = make_launch(tmp_path, "def step():\n    return object()\n")
    code, capture, _, _ = run(infra, launch)
    assert code == 1
    assert capture.result_json is not None
    result = json.loads(capture.result_json)
    assert result["ok"] is False
    assert result["kind"] == "output"
    assert "not JSON-serialisable" in result["error"]


def test_import_failure_exit_2(infra: ProcessInfrastructure, tmp_path: Path) -> None:
    launch = make_launch(tmp_path, "import no_such_dependency_xyz\n\ndef step():\n    pass\n")
    code, capture, logs, _ = run(infra, launch)
    assert code == 2
    assert capture.result_json is not None
    result = json.loads(capture.result_json)
    assert result["kind"] == "import"
    assert "No module named 'no_such_dependency_xyz'" in result["error"]
    assert any("no_such_dependency_xyz" in line for line in logs.stream("stderr"))


def test_large_payload_goes_through_a_file(infra: ProcessInfrastructure, tmp_path: Path) -> None:
    blob = "x" * 500_000
    launch = make_launch(tmp_path, "def step(blob):\n    return len(blob)\n", inputs={"blob": blob})
    code, capture, logs, _ = run(infra, launch)
    assert code == 0, logs.lines
    assert capture.result_json is not None
    assert json.loads(capture.result_json)["value"] == 500_000


def test_keep_workdir(tmp_path: Path) -> None:
    infra = ProcessInfrastructure(ProcessConfig(workdir_root=str(tmp_path), keep_workdir=True))
    launch = make_launch(tmp_path, "import os\n\ndef step():\n    return os.getcwd()\n")
    code, capture, _, _ = run(infra, launch)
    assert code == 0
    assert capture.result_json is not None
    assert Path(json.loads(capture.result_json)["value"]).is_dir()


def _start_waiting(
    infra: ProcessInfrastructure, tmp_path: Path, source: str
) -> tuple[str, Collector, threading.Thread, list[Any]]:
    launch = make_launch(tmp_path, source)
    logs = Collector()
    identifier = infra.start(launch, OutputCapture(launch.nonce, logs, launch.mask))
    results: list[Any] = []
    watcher = threading.Thread(target=lambda: results.append(infra.watch(identifier)))
    watcher.start()
    logs.wait_for(lambda line: line.startswith("ready"))
    return identifier, logs, watcher, results


def test_kill_escalates_to_sigkill_and_stops_children(
    infra: ProcessInfrastructure, tmp_path: Path
) -> None:
    identifier, logs, watcher, results = _start_waiting(
        infra,
        tmp_path,
        """
        import signal, subprocess, time

        def step():
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            child = subprocess.Popen(["sleep", "60"])
            print(f"ready {child.pid}")
            time.sleep(60)
        """,
    )
    child_pid = int(logs.wait_for(lambda line: line.startswith("ready")).split()[1])
    step_pid = parse_identifier(identifier)
    assert step_pid is not None
    started = time.monotonic()
    infra.kill(identifier, grace_seconds=0.3)
    watcher.join(5)
    elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 3
    assert results[0].status_code == -signal.SIGKILL
    assert "SIGKILL" in results[0].reason
    assert gone(step_pid[0])
    assert gone(child_pid)


def test_background_children_do_not_outlive_the_step(
    infra: ProcessInfrastructure, tmp_path: Path
) -> None:
    launch = make_launch(
        tmp_path,
        """
        import subprocess

        def step():
            return subprocess.Popen(["sleep", "60"]).pid  # left running, holding the pipes
        """,
    )
    started = time.monotonic()
    code, capture, _, _ = run(infra, launch)
    assert time.monotonic() - started < 3
    assert code == 0
    assert capture.result_json is not None
    assert gone(json.loads(capture.result_json)["value"])


def test_kill_from_another_infrastructure_instance(
    infra: ProcessInfrastructure, tmp_path: Path
) -> None:
    identifier, _, watcher, results = _start_waiting(
        infra,
        tmp_path,
        "import time\n\ndef step():\n    print('ready')\n    time.sleep(60)\n",
    )
    pid, _ = parse_identifier(identifier) or (0, "")
    other = ProcessInfrastructure()
    # a wrong token must not kill anything (protection against pid reuse)
    other.kill(f"process:{pid}:wrongtoken", grace_seconds=0.2)
    assert psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    other.kill(identifier, grace_seconds=2)
    watcher.join(5)
    assert results[0].status_code == -signal.SIGTERM


def test_start_from_a_short_lived_thread(infra: ProcessInfrastructure, tmp_path: Path) -> None:
    """PR_SET_PDEATHSIG follows the forking thread: the step must survive it."""
    flag = tmp_path / "flag"
    launch = make_launch(
        tmp_path,
        """
        import os, time

        def step(flag):
            print("ready")
            while not os.path.exists(flag):
                time.sleep(0.01)
            return "survived"
        """,
        inputs={"flag": str(flag)},
    )
    logs = Collector()
    capture = OutputCapture(launch.nonce, logs, launch.mask)
    ids: list[str] = []

    def starter_body() -> None:
        ids.append(infra.start(launch, capture))
        logs.wait_for(lambda line: line == "ready")  # the runtime has called prctl

    starter = threading.Thread(target=starter_body)
    starter.start()
    starter.join()  # the thread that called start() is gone
    time.sleep(0.1)
    flag.touch()
    assert infra.watch(ids[0]).status_code == 0
    assert capture.result_json is not None
    assert json.loads(capture.result_json)["value"] == "survived"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_step_dies_with_its_parent(tmp_path: Path) -> None:
    f = tmp_path / "orphan_step.py"
    f.write_text("import time\n\ndef step():\n    print('ready', flush=True)\n    time.sleep(60)\n")
    payload = {
        "function": {"file": str(f), "qualname": "step"},
        "inputs": {},
        "nonce": "n",
        "sys_path": [],
    }
    intermediate = textwrap.dedent(
        """
        import os, subprocess, sys
        r, w = os.pipe()  # the lifeline, as the process infrastructure sets it up
        env = dict(os.environ, FERRYMAN_LIFELINE_FD=str(r))
        p = subprocess.Popen([sys.executable, "-m", "ferryman.runtime"], env=env, pass_fds=(r,))
        print(p.pid, flush=True)
        p.wait()
        """
    )
    env = {**os.environ, PAYLOAD_ENV: json.dumps(payload)}
    parent = subprocess.Popen(
        [sys.executable, "-c", intermediate], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        step_pid = int(parent.stdout.readline())
        assert parent.stdout.readline().strip() == "ready"
        assert not gone(step_pid, timeout=0)
        parent.kill()
        parent.wait()
        assert gone(step_pid)
    finally:
        parent.kill()
        parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()

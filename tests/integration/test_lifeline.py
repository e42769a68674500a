"""A step never outlives its worker: the lifeline pipe (no start-up race)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil


def _spawn(tmp_path: Path, fd: int, seconds: float) -> tuple[subprocess.Popen[bytes], Path]:
    mod = tmp_path / "steps.py"
    marker = tmp_path / "ran"
    mod.write_text(
        "import time, pathlib, subprocess\n"
        "def work(path, seconds):\n"
        "    child = subprocess.Popen(['sleep', str(seconds)])\n"
        "    pathlib.Path(path).write_text(str(child.pid))\n"
        "    time.sleep(seconds)\n"
    )
    payload = {
        "function": {"file": str(mod), "qualname": "work"},
        "inputs": {"path": str(marker), "seconds": seconds},
        "nonce": "n",
        "sys_path": [],
    }
    env = {**os.environ, "FERRYMAN_STEP_PAYLOAD": json.dumps(payload),
           "FERRYMAN_LIFELINE_FD": str(fd)}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "ferryman.runtime"], env=env, pass_fds=(fd,),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    return proc, marker


def test_worker_already_gone_before_start_means_no_run(tmp_path: Path) -> None:
    r, w = os.pipe()
    os.close(w)  # the "worker" died before the step got going
    proc, marker = _spawn(tmp_path, r, 30)
    os.close(r)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert b"worker that started this step is gone" in err
    assert not marker.exists()  # the user's code never ran


def test_step_dies_when_the_lifeline_closes(tmp_path: Path) -> None:
    r, w = os.pipe()
    proc, marker = _spawn(tmp_path, r, 60)
    os.close(r)
    deadline = time.monotonic() + 30
    while not marker.exists():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    time.sleep(0.1)
    child = int(marker.read_text())
    os.close(w)  # the worker dies
    proc.communicate(timeout=10)
    assert proc.returncode != 0
    deadline = time.monotonic() + 5
    while psutil.pid_exists(child) and psutil.Process(child).status() != "zombie":
        assert time.monotonic() < deadline, "the step's child outlived the worker"
        time.sleep(0.02)

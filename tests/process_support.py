"""Real ``ferryman`` processes for the reliability tests: started with their
own environment, logging to files, killed with a real ``SIGKILL``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def fast_env(db_url: str, home: Path, lease: float = 2.0, **extra: str) -> dict[str, str]:
    """The environment of a ferryman process with a short lease (and sweep)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERRYMAN_")}
    env.update(
        FERRYMAN_DATABASE_URL=db_url,
        FERRYMAN_HOME=str(home),
        FERRYMAN_LEASE_SECONDS=str(lease),
        FERRYMAN_SWEEP_SECONDS="0.5",
        FERRYMAN_GRACE_SECONDS="1",
        FERRYMAN_POLL_SECONDS="0.5",
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


def wait_for(
    what: str, predicate: Callable[[], Any], timeout: float, check: Callable[[], None] | None = None
) -> Any:
    """Poll ``predicate`` until it is truthy (``check`` fails fast on a dead process)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if check is not None:
            check()
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.1)


class Procs:
    """``ferryman`` subprocesses of one test, each logging to ``logdir/<name>.log``."""

    def __init__(self, env: dict[str, str], logdir: Path) -> None:
        self.env = env
        self.logdir = logdir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.killed: set[str] = set()

    def start(
        self, name: str, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """``ferryman ARGS`` as process ``name`` (a name already used is replaced)."""
        with open(self.logdir / f"{name}.log", "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "ferryman", *args], env=env or self.env, cwd=ROOT,
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.procs[name] = proc
        self.killed.discard(name)
        return proc

    def log(self, name: str) -> str:
        return (self.logdir / f"{name}.log").read_text(errors="replace")

    def logs(self) -> str:
        return "\n".join(
            f"--- {n} (last lines) ---\n" + "\n".join(self.log(n).splitlines()[-30:])
            for n in self.procs
        )

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if name not in self.killed and proc.poll() is not None:
                pytest.fail(f"{name} exited with {proc.returncode}\n{self.logs()}")

    def kill9(self, name: str) -> None:
        """A real ``kill -9``."""
        proc = self.procs[name]
        self.killed.add(name)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def stop_all(self) -> None:
        """SIGTERM (a worker drains), then SIGKILL whatever is left."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

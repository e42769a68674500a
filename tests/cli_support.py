"""Running the real ``ferryman`` command in tests: a subprocess with its own
``FERRYMAN_HOME`` and database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cli_environment(home: Path, db_url: str | None = None, **extra: str) -> dict[str, str]:
    """The environment of a CLI process: no ``FERRYMAN_*`` setting of the
    caller's leaks in; ``home`` is its ``FERRYMAN_HOME``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERRYMAN_")}
    env.update(FERRYMAN_HOME=str(home), FERRYMAN_GRACE_SECONDS="2", **extra)
    if db_url is not None:
        env["FERRYMAN_DATABASE_URL"] = db_url
    return env


def ferryman(
    env: dict[str, str],
    *args: str,
    stdin: str | None = None,
    timeout: float = 120,
    cwd: Path = ROOT,
) -> subprocess.CompletedProcess[str]:
    """``ferryman ARGS`` to its end, output captured (so stdout is not a terminal)."""
    return subprocess.run(
        [sys.executable, "-m", "ferryman", *args], env=env, cwd=cwd, input=stdin,
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def popen(env: dict[str, str], *args: str, cwd: Path = ROOT) -> subprocess.Popen[str]:
    """``ferryman ARGS`` started, with pipes for stdout and stderr."""
    return subprocess.Popen(
        [sys.executable, "-m", "ferryman", *args], env=env, cwd=cwd,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip

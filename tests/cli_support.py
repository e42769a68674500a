"""Running the real ``ferryman`` command in tests: a subprocess with its own
``FERRYMAN_HOME`` and database."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
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


_next_port: list[int] = []


def free_port() -> int:
    """A TCP port free on loopback now, for a server a test starts.

    Not from the kernel's ephemeral range (``bind(("", 0))``): there the port
    can be handed to another test process's server, or to any outgoing
    connection, before our server binds it, and a test then talks to somebody
    else's server. Each pytest-xdist worker takes ports from its own block
    below that range, in turn, skipping ports in use.
    """
    import os
    import socket

    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    block = int(worker) if worker.isdigit() else 0
    first = 20_000 + (block % 12) * 1_000
    if not _next_port:
        _next_port.append(first + (os.getpid() % 10) * 100)
    for _ in range(1_000):
        port = _next_port[0]
        _next_port[0] = first + (port + 1 - first) % 1_000
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in this test process's block")


@contextmanager
def ferryman_server(
    home: Path, db_url: str, *args: str, password: str = "", stderr: Path | None = None
) -> Iterator[str]:
    """A real ``ferryman server`` process (``args`` added to its command line),
    until the block ends; yields its URL. ``password`` is the first admin's;
    ``stderr`` receives the server's log."""
    import time

    import httpx

    port = free_port()
    env = cli_environment(home, db_url, FERRYMAN_PORT=str(port))
    if password:
        env["FERRYMAN_ADMIN_PASSWORD"] = password
    err = stderr.open("w") if stderr is not None else subprocess.DEVNULL
    proc = subprocess.Popen(
        [sys.executable, "-m", "ferryman", "server", *args], env=env, cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=err,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, "the server exited"
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if stderr is not None:
            err.close()  # type: ignore[union-attr]

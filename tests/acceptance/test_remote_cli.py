"""The CLI against a real `ferryman server` process (--server, login, deploy, run)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "remote-cli-password"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(db_url: str, tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERRYMAN_")}
    env.update(
        FERRYMAN_HOME=str(tmp_path / "server-home"),
        FERRYMAN_DATABASE_URL=db_url,
        FERRYMAN_ADMIN_PASSWORD=PASSWORD,
        FERRYMAN_PORT=str(port),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "ferryman", "server"], env=env, cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
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
            assert time.monotonic() < deadline
            time.sleep(0.1)
        cli_env = {k: v for k, v in os.environ.items() if not k.startswith("FERRYMAN_")}
        cli_env.update(FERRYMAN_HOME=str(tmp_path / "cli-home"), COLUMNS="200")
        yield url, cli_env
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cli(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ferryman", *args], env=env, cwd=ROOT, input=stdin,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_login_deploy_run_inspect_against_a_server(server: tuple[str, dict[str, str]]) -> None:
    url, env = server
    r = cli(env, "runs", "ls", "--server", url)
    assert r.returncode == 2 and "not logged in" in r.stderr
    bad = cli(env, "login", "--server", url, "-u", "admin", "--password-stdin", stdin="nope\n")
    assert bad.returncode == 2 and "wrong username or password" in bad.stderr
    ok = cli(env, "login", "--server", url, "-u", "admin", "--password-stdin",
             stdin=PASSWORD + "\n")  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    creds = Path(env["FERRYMAN_HOME"]) / "credentials.json"
    assert oct(creds.stat().st_mode & 0o777) == "0o600"
    d = cli(env, "deploy", "examples/etl.py", "--server", url)
    assert d.returncode == 0 and "default/etl: version" in d.stdout, d.stderr
    run = cli(env, "run", "etl", "-p", "source=2024", "-p", "limit=4", "--watch", "--server", url)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "load#1 succeeded" in run.stdout
    run_id = run.stdout.split()[1]
    ls = cli(env, "runs", "ls", "--server", url)
    assert run_id in ls.stdout
    got = cli(env, "runs", "get", run_id, "--server", url)
    assert got.returncode == 0 and "transform-3" in got.stdout
    logs = cli(env, "runs", "logs", run_id, "--step", "extract", "--server", url)
    assert "extracting 4 rows from 2024" in logs.stdout
    invalid = cli(env, "run", "etl", "-p", "limit=0", "-p", "lang=fr", "--server", url)
    assert invalid.returncode == 2
    assert "limit" in invalid.stdout + invalid.stderr and "lang" in invalid.stdout + invalid.stderr
    missing = cli(env, "run", "nope", "--server", url)
    assert missing.returncode == 2 and "no pipeline 'nope'" in missing.stderr

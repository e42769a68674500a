"""The CLI against a real ``ferryman server`` process, as a new user meets it
(issue 12): every reading command works on the server and never reads the
local database (item 8); Ctrl-C on ``run --server --watch/--wait`` cancels the
run there, a second Ctrl-C detaches (item 9); ``--access-log`` logs requests
without ``--log-level INFO`` (item 14)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from tests.cli_support import ROOT, cli_environment, ferryman, ferryman_server, popen

from ferryman.client import Client

#: Each test starts several CLI processes, each a fresh interpreter.
pytestmark = pytest.mark.timeout(300)

PASSWORD = "first-hour-password"
PIPES = ROOT / "tests" / "pipelines" / "basic.py"


@pytest.fixture
def served(db_url: str, tmp_path: Path) -> Iterator[tuple[str, dict[str, str], Path]]:
    """A server, and the environment of a CLI logged in to it whose own
    database (``FERRYMAN_DATABASE_URL``) is a file that must never appear."""
    local_db = tmp_path / "local" / "never.db"
    with ferryman_server(tmp_path / "server-home", db_url, password=PASSWORD) as url:
        env = cli_environment(tmp_path / "cli-home", f"sqlite:///{local_db}", COLUMNS="200")
        login = ferryman(env, "login", "--server", url, "-u", "admin", "--password-stdin",
                         stdin=PASSWORD + "\n")  # fmt: skip
        assert login.returncode == 0, login.stderr
        yield url, env, local_db


def api(url: str) -> Client:
    c = Client(url)
    c.login("admin", PASSWORD)
    return c


def test_every_reading_command_works_against_the_server(
    served: tuple[str, dict[str, str], Path],
) -> None:
    url, env, local_db = served
    d = ferryman(env, "deploy", "examples/etl.py", "--server", url)
    assert d.returncode == 0, d.stderr
    run = ferryman(env, "run", "etl", "-p", "limit=2", "-l", "team=data", "--wait",
                   "--server", url)  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    run_id, name = run.stdout.split()[1], run.stdout.split()[2].strip("()")
    # FERRYMAN_SERVER alone: no --server on any of these
    env = {**env, "FERRYMAN_SERVER": url}

    def ok(*args: str) -> str:
        r = ferryman(env, *args)
        assert r.returncode == 0, (args, r.stdout, r.stderr)
        return r.stdout

    assert ok("pipelines", "ls").splitlines()[1].split()[:2] == ["default", "etl"]
    assert [p["name"] for p in json.loads(ok("pipelines", "ls", "--json"))] == ["etl"]
    describe = ok("pipelines", "describe", "etl")
    assert "limit" in describe and "integer" in describe and "extract" in describe
    detail = json.loads(ok("pipelines", "describe", "etl", "--json"))
    assert [p["name"] for p in detail["params"]] == ["source", "limit", "lang"]
    (version,) = json.loads(ok("pipelines", "versions", "etl", "--json"))
    assert version["version"] == detail["version"]
    listed = ok("runs", "ls")
    assert run_id in listed and name in listed
    assert [r["id"] for r in json.loads(ok("runs", "ls", "--label", "team=data", "--json"))] == [
        run_id
    ]
    assert json.loads(ok("runs", "ls", "--label", "team=ml", "--json")) == []
    assert json.loads(ok("runs", "get", run_id[:10], "--json"))["name"] == name
    assert ok("runs", "logs", name, "--step", "extract", "--attempt", "1").strip() == (
        "[extract#1] extracting 2 rows from demo"
    )
    assert ok("runs", "logs", name, "--tail", "1").strip() == "[load#1] loaded 2 rows (en)"
    assert "name" in ok("subscriptions", "ls")
    # a deployed pipeline's steps are not handed out: said, not read from elsewhere
    preview = ferryman(env, "preview", "etl")
    assert preview.returncode == 2 and "cannot preview 'etl' as deployed on" in preview.stderr
    assert ferryman(env, "preview", "examples/etl.py:etl").returncode == 0  # a file: no state
    missing = ferryman(env, "pipelines", "describe", "nope")
    assert missing.returncode == 2 and "no pipeline 'nope'" in missing.stderr
    assert not local_db.exists() and not local_db.parent.exists()


def test_a_failed_run_on_the_server_labels_each_attempt(
    served: tuple[str, dict[str, str], Path],
) -> None:
    # issue 12, item 11: the same failure summary as embedded, attempts included
    url, env, local_db = served
    flaky = f"{ROOT / 'tests' / 'pipelines' / 'retrying.py'}:flaky"
    r = ferryman(env, "run", flaky, "--wait", "--server", url)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "failed step: wobbly (attempt 2 of 2)" in r.stdout
    assert "[wobbly#1] trying" in r.stdout and "[wobbly#2] trying" in r.stdout
    got = ferryman(env, "runs", "get", r.stdout.split()[1], "--server", url)
    assert got.returncode == 0, got.stderr
    assert "failed step: wobbly (attempt 2 of 2)" in got.stdout
    assert "[wobbly#1] trying" in got.stdout and "[wobbly#2] trying" in got.stdout
    # issue 12, item 12: runs outputs against the server
    run_id = r.stdout.split()[1]
    outputs = ferryman(env, "runs", "outputs", run_id, "--json", "--server", url)
    assert json.loads(outputs.stdout) == {"run_id": run_id, "outputs": {}}
    none = ferryman(env, "runs", "outputs", run_id, "wobbly", "--server", url)
    assert none.returncode == 1
    assert "has no output (it is failed: Transient: still down)" in none.stderr
    unknown = ferryman(env, "runs", "outputs", run_id, "nope", "--server", url)
    assert unknown.returncode == 2 and "has no step 'nope' (steps: wobbly)" in unknown.stderr
    assert not local_db.exists()


def _started(pidfile: Path, p: subprocess.Popen[str]) -> tuple[int, int]:
    deadline = time.monotonic() + 60
    while not pidfile.exists() or len(pidfile.read_text().split()) < 2:
        assert p.poll() is None, p.communicate()
        assert time.monotonic() < deadline, "the step never started"
        time.sleep(0.05)
    step_pid, child_pid = map(int, pidfile.read_text().split())
    return step_pid, child_pid


def _gone(pid: int, within: float = 20) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie":
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("follow", ["--watch", "--wait"])
def test_ctrl_c_cancels_the_run_on_the_server(
    served: tuple[str, dict[str, str], Path], tmp_path: Path, follow: str
) -> None:
    url, env, _ = served
    pidfile = tmp_path / "pids"
    p = popen(env, "run", f"{PIPES}:long_running", "-p", f"pidfile={pidfile}", "--server", url,
              follow)  # fmt: skip
    try:
        pids = _started(pidfile, p)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, (out, err)
    assert "cancelling the run on the server and waiting for it to end" in err
    run_id = out.split()[1]
    assert f"run {run_id} cancelled in" in out  # it waited for the end
    with api(url) as c:
        run = c.get_run(run_id)
    assert run.state == "cancelled"
    assert {n.name: n.state for n in run.nodes} == {"spawner": "cancelled", "ok": "cancelled"}
    assert all(_gone(pid) for pid in pids)
    assert "Traceback" not in err and "Aborted" not in err


def test_a_second_ctrl_c_detaches_at_once(
    served: tuple[str, dict[str, str], Path], tmp_path: Path
) -> None:
    url, env, _ = served
    pidfile = tmp_path / "pids"
    p = popen(env, "run", f"{PIPES}:long_running", "-p", f"pidfile={pidfile}", "--server", url,
              "--watch")  # fmt: skip
    try:
        pids = _started(pidfile, p)
        p.send_signal(signal.SIGINT)
        time.sleep(0.1)
        p.send_signal(signal.SIGINT)  # before the run has ended
        t0 = time.monotonic()
        out, err = p.communicate(timeout=30)
        took = time.monotonic() - t0
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, (out, err)
    assert took < 5, took  # at once: no wait for the run's end
    run_id = out.split()[1]
    assert f"detached: run {run_id} is still being cancelled on {url}" in err
    assert f"ferryman runs logs {run_id} --follow --server {url}" in err
    assert f"ferryman runs cancel {run_id} --server {url}" in err
    assert "cancelled in" not in out
    with api(url) as c:  # the first Ctrl-C's cancel reached the server all the same
        deadline = time.monotonic() + 30
        while c.get_run(run_id).state != "cancelled":
            assert time.monotonic() < deadline
            time.sleep(0.2)
    assert all(_gone(pid) for pid in pids)


def test_access_log_needs_no_log_level(db_url: str, tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with ferryman_server(tmp_path / "home", db_url, "--access-log", stderr=log) as url:
        assert httpx.get(f"{url}/health?from=test").status_code == 200
        deadline = time.monotonic() + 10
        while "/health?from=test" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
    text = log.read_text()
    assert '"GET /health?from=test HTTP/1.1" 200' in text
    # only the access lines are let through: the rest stays at WARNING
    assert "Uvicorn running" not in text and "Started server process" not in text


def test_no_access_log_without_the_flag(db_url: str, tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with ferryman_server(tmp_path / "home", db_url, stderr=log) as url:
        assert httpx.get(f"{url}/health?from=test").status_code == 200
        time.sleep(0.5)
    assert "/health" not in log.read_text()

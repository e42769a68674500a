"""The ``ferryman`` command line, as a user runs it (real subprocesses)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]
PIPES = ROOT / "tests" / "pipelines" / "basic.py"


@pytest.fixture
def cli_env(db_url: str, tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        FERRYMAN_HOME=str(tmp_path / "home"),
        FERRYMAN_DATABASE_URL=db_url,
        FERRYMAN_GRACE_SECONDS="2",
        COLUMNS="200",
    )
    env.pop("FERRYMAN_DEBUG", None)
    return env


def ferryman(
    env: dict[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ferryman", *args],
        env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
    )  # fmt: skip


def test_run_example_succeeds_with_progress(cli_env: dict[str, str]) -> None:
    r = ferryman(cli_env, "run", "examples/etl.py:etl", "-p", "source=demo", "-p", "limit=6",
                 "--watch")  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "extract#1 running" in out and "load#1 succeeded" in out
    assert "succeeded in" in out.splitlines()[-1]
    run_id = out.split()[1]
    got = ferryman(cli_env, "runs", "get", run_id)
    assert got.returncode == 0 and "transform-3" in got.stdout and "succeeded" in got.stdout
    logs = ferryman(cli_env, "runs", "logs", run_id, "--step", "extract")
    assert "extracting 6 rows from demo" in logs.stdout
    ls = ferryman(cli_env, "runs", "ls", "--state", "succeeded")
    assert run_id in ls.stdout


def test_failed_run_shows_step_error_and_log_tail(cli_env: dict[str, str]) -> None:
    r = ferryman(cli_env, "run", f"{PIPES}:failing", "-p", "message=the input is broken")
    assert r.returncode == 1
    assert "failed step: boom (attempt 1 of 1)" in r.stdout
    assert "RuntimeError: the input is broken" in r.stdout
    assert "[boom#1] about to fail" in r.stdout  # the tail of the step's log
    assert "Traceback" not in r.stderr


def test_the_failure_summary_labels_each_attempts_lines(cli_env: dict[str, str]) -> None:
    # issue 12, item 11: lines of several attempts, each with its number
    r = ferryman(cli_env, "run", f"{ROOT / 'tests' / 'pipelines' / 'retrying.py'}:flaky")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "failed step: wobbly (attempt 2 of 2)" in r.stdout
    assert "error: Transient: still down" in r.stdout
    assert "[wobbly#1] trying" in r.stdout and "[wobbly#2] trying" in r.stdout
    got = ferryman(cli_env, "runs", "get", r.stdout.split()[1])
    assert got.returncode == 0, got.stderr
    assert "failed step: wobbly (attempt 2 of 2)" in got.stdout
    assert "[wobbly#1] trying" in got.stdout and "[wobbly#2] trying" in got.stdout


def test_param_errors_are_all_listed_and_nothing_starts(cli_env: dict[str, str]) -> None:
    r = ferryman(cli_env, "run", "examples/etl.py:etl", "-p", "limit=0", "-p", "lang=fr",
                 "-p", "bogus=1")  # fmt: skip
    assert r.returncode == 2
    err = r.stderr
    assert "limit" in err and "greater than or equal to 1" in err
    assert "lang" in err and "'fr'" in err
    assert "bogus" in err and "unknown parameter" in err
    assert "Traceback" not in err
    ls = ferryman(cli_env, "runs", "ls")
    assert "etl" not in ls.stdout  # no run was created


def test_bad_references_are_clear_errors(cli_env: dict[str, str], tmp_path: Path) -> None:
    r = ferryman(cli_env, "run", "nope.py:etl")
    assert r.returncode == 2 and "no such file" in r.stderr
    r = ferryman(cli_env, "run", "examples/etl.py:nothing")
    assert r.returncode == 2 and "has no pipeline 'nothing'" in r.stderr and "etl" in r.stderr
    r = ferryman(cli_env, "run", "never-deployed")
    assert r.returncode == 2 and "no pipeline 'never-deployed'" in r.stderr
    r = ferryman(cli_env, "runs", "get", "0123456789")
    assert r.returncode == 2 and "no run" in r.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsteps:\n  - name: a\n    retries: -1\n")
    r = ferryman(cli_env, "run", str(bad))
    assert r.returncode == 2 and "retries" in r.stderr and "Traceback" not in r.stderr


def test_deploy_then_run_by_name(cli_env: dict[str, str]) -> None:
    d = ferryman(cli_env, "deploy", "examples/etl.py")
    assert d.returncode == 0 and "default/etl: version" in d.stdout and "new version" in d.stdout
    again = ferryman(cli_env, "deploy", "examples/etl.py")
    assert "unchanged" in again.stdout
    r = ferryman(cli_env, "run", "etl", "-p", "limit=3")
    assert r.returncode == 0, r.stderr + r.stdout
    ls = ferryman(cli_env, "pipelines", "ls")
    assert "etl" in ls.stdout
    desc = ferryman(cli_env, "pipelines", "describe", "etl")
    assert "limit" in desc.stdout and "integer" in desc.stdout


def test_yaml_pipeline_runs(cli_env: dict[str, str]) -> None:
    r = ferryman(cli_env, "run", "examples/etl.yaml")
    assert r.returncode == 0, r.stderr + r.stdout


def test_db_upgrade(cli_env: dict[str, str]) -> None:
    r = ferryman(cli_env, "db", "upgrade")
    assert r.returncode == 0 and "database at revision" in r.stdout


def test_ctrl_c_cancels_and_kills_steps(cli_env: dict[str, str], tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    p = subprocess.Popen(
        [sys.executable, "-m", "ferryman", "run", f"{PIPES}:long_running",
         "-p", f"pidfile={pidfile}"],
        env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not pidfile.exists() or len(pidfile.read_text().split()) < 2:
            assert p.poll() is None, p.communicate()
            assert time.monotonic() < deadline, "the step never started"
            time.sleep(0.05)
        step_pid, child_pid = map(int, pidfile.read_text().split())
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, (out, err)
    assert "cancelled" in out
    for pid in (step_pid, child_pid):
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"


def test_logs_follow_streams_until_the_end(cli_env: dict[str, str]) -> None:
    r = ferryman(cli_env, "run", f"{PIPES}:fan", "-p", "n=4")
    assert r.returncode == 0
    run_id = r.stdout.split()[1]
    f = ferryman(cli_env, "runs", "logs", run_id, "--follow")
    assert f.returncode == 0
    assert "shard 1 of 3" in f.stdout and "to stderr" in f.stdout


def test_params_file(cli_env: dict[str, str], tmp_path: Path) -> None:
    pf = tmp_path / "p.json"
    pf.write_text(json.dumps({"limit": 2, "source": "file"}))
    r = ferryman(cli_env, "run", "examples/etl.py:etl", "--params-file", str(pf))
    assert r.returncode == 0, r.stderr


def test_cancel_from_another_process(cli_env: dict[str, str], tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    p = subprocess.Popen(
        [sys.executable, "-m", "ferryman", "run", f"{PIPES}:long_running",
         "-p", f"pidfile={pidfile}"],
        env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        assert p.stdout is not None
        run_id = p.stdout.readline().split()[1]
        deadline = time.monotonic() + 60
        while not pidfile.exists() or len(pidfile.read_text().split()) < 2:
            assert p.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        t0 = time.monotonic()
        c = ferryman(cli_env, "runs", "cancel", run_id)
        assert c.returncode == 0, c.stderr
        out, _ = p.communicate(timeout=60)
        took = time.monotonic() - t0
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 1
    assert "cancelled" in out
    assert took < 8, took  # noticed within a second or so, plus the SIGTERM grace


def test_rerun_from_the_failed_step(cli_env: dict[str, str], tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    flag.write_text("x")
    r = ferryman(cli_env, "run", f"{PIPES}:rerunnable", "-p", f"flag={flag}")
    assert r.returncode == 1
    run_id = r.stdout.split()[1]
    flag.unlink()
    again = ferryman(cli_env, "runs", "rerun", run_id, "--watch")
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"re-run of {run_id}" in again.stdout
    assert "maybe_fail#1 succeeded" in again.stdout
    assert "ok#1 running" not in again.stdout  # the step that succeeded was reused


def test_string_params_stay_strings(cli_env: dict[str, str]) -> None:
    r = ferryman(cli_env, "run", "examples/etl.py:etl", "-p", "source=2024", "-p", "limit=2")
    assert r.returncode == 0, r.stderr
    run_id = r.stdout.split()[1]
    logs = ferryman(cli_env, "runs", "logs", run_id, "--step", "extract")
    assert "extracting 2 rows from 2024" in logs.stdout

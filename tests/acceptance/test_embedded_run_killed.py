"""Acceptance: ``kill -9`` of an embedded ``ferryman run`` leaves nothing
running (issue 12, item 3).

The run is leased to its ``ferryman run`` process. Once that lease has
expired, the next ferryman command on the same home (here ``runs ls``) ends
the run ``failed`` with the error "the ferryman run process that ran it
died"; ``ferryman runs rerun`` then continues from the steps that had not
succeeded (the first step is not run again: its output is reused).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from tests.cli_support import ferryman
from tests.pipelines.reliability import attempts
from tests.process_support import Procs, fast_env, wait_for

from ferryman.store.engine import Store
from ferryman.store.tables import nodes, runs

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux"),
]

PIPES = Path(__file__).parent.parent / "pipelines" / "reliability.py"
LEASE = 2.0
DIED = "the ferryman run process that ran it died"


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> dict[str, str]:
    return fast_env(db_url, tmp_path / "home", LEASE)


@pytest.fixture
def procs(env: dict[str, str], tmp_path: Path) -> Iterator[Procs]:
    p = Procs(env, tmp_path)
    try:
        yield p
    finally:
        p.stop_all()


def test_a_killed_ferryman_run_is_ended_by_the_next_command_and_reruns_from_there(
    db_url: str, env: dict[str, str], procs: Procs, tmp_path: Path
) -> None:
    outdir = tmp_path / "out"
    outdir.mkdir()
    (outdir / "slow").touch()
    procs.start("run", "run", f"{PIPES}:chain", "-p", f"outdir={outdir}", "-p", "seconds=120")
    wait_for("the slow step to start", lambda: attempts(outdir).get("second"), 60,
             procs.check_alive)  # fmt: skip
    procs.kill9("run")
    store = Store(db_url)
    try:
        with store.read() as conn:
            run_id, state = conn.execute(sa.select(runs.c.id, runs.c.state)).one()
        assert state == "running"
        time.sleep(LEASE + 1.0)  # the run's lease has expired

        ls = ferryman(env, "runs", "ls", "--json")
        assert ls.returncode == 0, ls.stderr
        assert "was left running by a ferryman process that died" in ls.stderr
        listed = {r["id"]: r for r in json.loads(ls.stdout)}
        assert listed[run_id]["state"] == "failed"
        with store.read() as conn:
            run = conn.execute(sa.select(runs).where(runs.c.id == run_id)).one()
            steps = dict(
                conn.execute(
                    sa.select(nodes.c.name, nodes.c.state).where(nodes.c.run_id == run_id)
                ).all()
            )
        assert run.state == "failed" and run.error == DIED
        assert steps == {"first": "succeeded", "second": "cancelled", "third": "cancelled"}

        # A re-run continues from the unfinished steps.
        (outdir / "slow").unlink()
        rerun = ferryman(env, "runs", "rerun", run_id)
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        assert "succeeded" in rerun.stdout
        assert attempts(outdir) == {"first": 1, "second": 2, "third": 1}
        with store.read() as conn:
            states = conn.execute(sa.select(runs.c.state).order_by(runs.c.created_at)).scalars()
            assert list(states) == ["failed", "succeeded"]
    finally:
        store.dispose()


def test_the_run_of_a_live_process_is_left_alone(
    db_url: str, env: dict[str, str], procs: Procs, tmp_path: Path
) -> None:
    outdir = tmp_path / "out"
    outdir.mkdir()
    (outdir / "slow").touch()
    procs.start("run", "run", f"{PIPES}:chain", "-p", f"outdir={outdir}", "-p", "seconds=15")
    wait_for("the slow step to start", lambda: attempts(outdir).get("second"), 60,
             procs.check_alive)  # fmt: skip
    time.sleep(LEASE + 1.0)  # longer than a lease: the process renews it
    ls = ferryman(env, "runs", "ls", "--json")
    assert ls.returncode == 0, ls.stderr
    assert "died" not in ls.stderr
    assert [r["state"] for r in json.loads(ls.stdout)] == ["running"]
    assert procs.procs["run"].wait(60) == 0, procs.log("run")
    assert attempts(outdir) == {"first": 1, "second": 1, "third": 1}

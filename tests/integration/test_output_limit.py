"""Step outputs are capped (issue 12, item 12): a step returning 100 MB
fails at once with a clear error, and neither the worker's memory nor the
database takes the 100 MB; ``ferryman runs outputs`` reads what was kept."""

from __future__ import annotations

import json
import resource
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from tests.cli_support import cli_environment, ferryman

from ferryman.domain.options import RunOptions
from ferryman.dsl.loader import load_pipeline
from ferryman.engine.worker import Worker
from ferryman.services.catalog import register
from ferryman.services.queries import get_run
from ferryman.services.runs import RunService
from ferryman.settings import Settings
from ferryman.store.engine import Store
from ferryman.store.tables import logs, nodes

PIPES = Path(__file__).parent.parent / "pipelines" / "outputs.py"
MiB = 1024 * 1024


def run_sized(store: Store, settings: Settings, size: int, infra: str | None = None) -> str:
    with store.write() as conn:
        pv = register(conn, "default", load_pipeline(f"{PIPES}:sized"))
    options = RunOptions(infrastructure=infra)
    run_id = RunService(store).start_version(pv, {"size": size}, options=options).id
    Worker(store, settings).run_until({run_id}, timeout=120)
    return run_id


def stored(store: Store, run_id: str) -> dict[str, Any]:
    """Per step: state, attempt, error, has_output and the stored output's JSON length."""
    with store.read() as conn:
        rows = conn.execute(
            sa.select(
                nodes.c.name,
                nodes.c.state,
                nodes.c.attempt,
                nodes.c.error,
                nodes.c.has_output,
                nodes.c.output,
            ).where(nodes.c.run_id == run_id)
        ).all()
    return {
        r.name: (r.state, r.attempt, r.error, r.has_output, len(json.dumps(r.output))) for r in rows
    }


def max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def test_a_100_mb_output_fails_its_step_and_is_never_held(store: Store, settings: Settings) -> None:
    before = max_rss_mib()
    run_id = run_sized(store, settings, 100_000_000)  # a real step process
    grown = max_rss_mib() - before
    got = stored(store, run_id)
    state, attempt, error, has_output, size = got["make"]
    assert (state, attempt, has_output, size) == ("failed", 1, False, len("null"))  # no retry
    assert error == (
        "output is 95.4 MiB, over the 1 MiB limit (FERRYMAN_MAX_OUTPUT_BYTES): write large "
        "data to storage and return a reference (not retried: another attempt would return "
        "it again)"
    )
    assert got["small"][0] == "succeeded" and got["small"][3] is True
    # the worker (this process) never held the output: its peak memory grew far
    # less than 100 MB (it was 845 MB before outputs were capped)
    assert grown < 50, f"the worker's peak memory grew by {grown:.0f} MiB"
    with store.read() as conn:
        log_bytes = conn.execute(
            sa.select(sa.func.sum(sa.func.length(logs.c.line))).where(logs.c.run_id == run_id)
        ).scalar()
        assert get_run(conn, run_id)["state"] == "failed"
    assert log_bytes < 10_000


@pytest.mark.parametrize("infra", [None, "inline"])
def test_the_limit_is_a_setting_and_holds_on_every_infrastructure(
    store: Store, settings: Settings, infra: str | None
) -> None:
    s = settings.updated(max_output_bytes=2048)
    ok = stored(store, run_sized(store, s, 2000, infra))
    assert ok["make"][0] == "succeeded" and ok["make"][4] == 2002  # "x" * 2000, as JSON
    over = stored(store, run_sized(store, s, 3000, infra))
    state, attempt, error, has_output, _ = over["make"]
    assert (state, attempt, has_output) == ("failed", 1, False)
    assert error.startswith("output is 2.9 KiB, over the 2 KiB limit (FERRYMAN_MAX_OUTPUT_BYTES)")


def test_runs_outputs_reads_them_back(db_url: str, tmp_path: Path) -> None:
    env = cli_environment(tmp_path / "home", db_url, FERRYMAN_MAX_OUTPUT_BYTES="4096")
    r = ferryman(env, "run", f"{PIPES}:sized", "-p", "size=10")
    assert r.returncode == 0, r.stdout + r.stderr
    run_id = r.stdout.split()[1]
    table = ferryman(env, "runs", "outputs", run_id)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["step", "output"]
    assert lines[1].rstrip().split(None, 1) == ["make", '"xxxxxxxxxx"']
    assert lines[2].rstrip().split(None, 1) == ["small", '{"n": 1}']
    one = ferryman(env, "runs", "outputs", run_id, "small")
    assert (one.returncode, json.loads(one.stdout)) == (0, {"n": 1})
    as_json = ferryman(env, "runs", "outputs", run_id, "--json")
    assert json.loads(as_json.stdout) == {
        "run_id": run_id,
        "outputs": {"make": "x" * 10, "small": {"n": 1}},
    }
    assert json.loads(ferryman(env, "runs", "outputs", run_id, "make", "--json").stdout) == {
        "run_id": run_id,
        "outputs": {"make": "x" * 10},
    }
    unknown = ferryman(env, "runs", "outputs", run_id, "nope")
    assert unknown.returncode == 2
    assert f"run {run_id} has no step 'nope' (steps: make, small)" in unknown.stderr
    big = ferryman(env, "run", f"{PIPES}:sized", "-p", "size=5000")
    assert big.returncode == 1 and "over the 4 KiB limit" in big.stdout
    none = ferryman(env, "runs", "outputs", big.stdout.split()[1], "make")
    assert none.returncode == 1
    assert "has no output (it is failed: output is 4.9 KiB, over the 4 KiB limit" in none.stderr
    assert "Traceback" not in unknown.stderr + none.stderr

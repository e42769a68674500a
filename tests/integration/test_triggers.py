"""Event triggers end to end (SPEC §4) on SQLite and PostgreSQL, through the real engine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from ferryman.domain.spec import PipelineSpec
from ferryman.dsl.loader import load_pipeline
from ferryman.engine.worker import Worker
from ferryman.errors import InvalidInput
from ferryman.services import triggers
from ferryman.services.catalog import PipelineVersion, register
from ferryman.services.queries import get_run
from ferryman.services.runs import RunService
from ferryman.settings import Settings
from ferryman.store.engine import Store
from ferryman.store.tables import events, nodes, runs, trigger_firings

PIPES = Path(__file__).parent.parent / "pipelines" / "chained.py"


@pytest.fixture(autouse=True)
def _fresh_spec_cache() -> None:
    """Specs are cached per process by version id; every test has a new database
    whose ids start again at 1, and pipelines registered by a CLI subprocess are
    not seen by this process's cache."""
    from ferryman.services import catalog

    catalog._SPEC_CACHE.clear()


def deploy(store: Store, *names: str, namespace: str = "default") -> list[PipelineVersion]:
    out = []
    for name in names:
        with store.write() as conn:
            out.append(register(conn, namespace, load_pipeline(f"{PIPES}:{name}")))
    return out


def start(store: Store, name: str, namespace: str = "default", **params: Any) -> str:
    spec = load_pipeline(f"{PIPES}:{name}")
    with store.write() as conn:
        pv = register(conn, namespace, spec)
    return RunService(store).start_version(pv, params).id


def open_runs(store: Store) -> set[str]:
    with store.read() as conn:
        return set(
            conn.execute(
                sa.select(runs.c.id).where(runs.c.state.in_(["queued", "running"]))
            ).scalars()
        )


def drain(store: Store, settings: Settings) -> None:
    """Run every run, including those triggered meanwhile, to its end."""
    for _ in range(50):
        todo = open_runs(store)
        if not todo:
            return
        Worker(store, settings).run_until(todo, timeout=60)
    pytest.fail("runs kept being created")


def runs_of(store: Store, pipeline: str) -> list[dict[str, Any]]:
    with store.read() as conn:
        ids = conn.execute(
            sa.select(runs.c.id).where(runs.c.pipeline == pipeline).order_by(runs.c.created_at)
        ).scalars()
        return [get_run(conn, i) for i in ids]


def firings(store: Store, run_id: str) -> list[dict[str, Any]]:
    with store.read() as conn:
        return triggers.firings_of(conn, run_id)


def test_success_starts_the_triggered_run_with_mapped_params(
    store: Store, settings: Settings
) -> None:
    deploy(store, "report", "alert")
    a = start(store, "extract", day="2024-06-30")
    drain(store, settings)
    (ra,) = runs_of(store, "extract")
    assert ra["state"] == "succeeded"
    (rb,) = runs_of(store, "report")
    assert rb["state"] == "succeeded"
    assert rb["params"] == {"day": "2024-06-30", "rows": 100, "source_run": a}
    assert rb["labels"] == {"team": "data", "chained": "yes"}  # inherited + stated
    with store.read() as conn:
        event_id = conn.execute(
            sa.select(events.c.id).where(events.c.run_id == a, events.c.type == "RunSucceeded")
        ).scalar_one()
    assert rb["trigger"] == {
        "kind": "event",
        "run_id": a,
        "namespace": "default",
        "pipeline": "extract",
        "state": "succeeded",
        "event_id": event_id,
        "depth": 1,
        "trigger": 0,
    }
    with store.read() as conn:
        out = conn.execute(
            sa.select(nodes.c.output).where(nodes.c.run_id == rb["id"], nodes.c.name == "record")
        ).scalar_one()
    assert out == {"day": "2024-06-30", "rows": 100, "source_run": a}
    assert runs_of(store, "alert") == []  # it listens to failed/cancelled only
    (f,) = firings(store, a)
    assert f["run_id"] == rb["id"] and f["error"] is None and f["pipeline"] == "report"


def test_failure_does_not_start_success_trigger_but_starts_failure_trigger(
    store: Store, settings: Settings
) -> None:
    deploy(store, "report", "alert")
    a = start(store, "extract", fail=True)
    drain(store, settings)
    assert runs_of(store, "extract")[0]["state"] == "failed"
    assert runs_of(store, "report") == []
    (alert,) = runs_of(store, "alert")
    assert alert["params"] == {"failed_run": a, "state": "failed"}
    assert alert["labels"] == {}  # inherit_labels=False
    assert alert["state"] == "succeeded"


def test_cancel_fires_the_cancelled_trigger(store: Store, settings: Settings) -> None:
    deploy(store, "alert")
    a = start(store, "extract")
    RunService(store).cancel(a)  # nothing started: the run ends at once
    (alert,) = runs_of(store, "alert")
    assert alert["params"] == {"failed_run": a, "state": "cancelled"}
    assert alert["trigger"]["state"] == "cancelled"


def test_invalid_mapping_keeps_the_source_run_and_records_why(
    store: Store, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    deploy(store, "strict", "report")
    a = start(store, "extract")
    drain(store, settings)
    assert runs_of(store, "extract")[0]["state"] == "succeeded"
    assert runs_of(store, "strict") == []
    assert len(runs_of(store, "report")) == 1  # the other trigger still fired
    by_pipeline = {f["pipeline"]: f for f in firings(store, a)}
    assert by_pipeline["strict"]["run_id"] is None
    assert "mapped parameters are invalid" in by_pipeline["strict"]["error"]
    assert "rows" in by_pipeline["strict"]["error"]
    assert "started no run" in caplog.text


def test_missing_step_output_is_recorded(store: Store, settings: Settings) -> None:
    deploy(store, "report")
    a = start(store, "extract", fail=True)
    drain(store, settings)
    assert runs_of(store, "report") == []
    assert firings(store, a) == []  # report listens to succeeded only: nothing to record


def test_fires_exactly_once_when_firing_is_repeated(store: Store, settings: Settings) -> None:
    deploy(store, "report")
    a = start(store, "extract")
    drain(store, settings)
    assert len(runs_of(store, "report")) == 1
    svc = RunService(store)
    # The finishing path again: the run is already final, the guarded move loses.
    with store.write() as conn:
        tx = svc.tx(conn)
        row = conn.execute(
            sa.select(
                runs.c.nodes_remaining, runs.c.failed_node, runs.c.cancel_requested,
                runs.c.cancel_reason, runs.c.error,
            ).where(runs.c.id == a)
        ).one()  # fmt: skip
        assert tx.finish_run(a, row) is False
        tx.flush()
    # Firing itself again (as a retried finalisation would): the unique row holds.
    with store.write() as conn:
        tx = svc.tx(conn)
        triggers.fire(tx, a, "succeeded", "another-event", 10)
        tx.flush()
    assert len(runs_of(store, "report")) == 1
    with store.read() as conn:
        n = conn.execute(
            sa.select(sa.func.count()).where(trigger_firings.c.source_run_id == a)
        ).scalar_one()
    assert n == 1


def test_rolled_back_finish_fires_nothing(store: Store, settings: Settings) -> None:
    """A crash before the finishing transaction commits loses the trigger with the state
    change; the retried finish fires it once."""
    deploy(store, "alert")
    a = start(store, "extract")
    svc = RunService(store)
    with pytest.raises(RuntimeError), store.write() as conn:
        svc.request_cancel(tx := svc.tx(conn), a, "stop")
        tx.flush()
        raise RuntimeError("crash before commit")
    assert runs_of(store, "alert") == []
    assert runs_of(store, "extract")[0]["state"] == "queued"
    svc.cancel(a)
    assert len(runs_of(store, "alert")) == 1


def test_loops_stop_at_the_depth_limit(store: Store, settings: Settings) -> None:
    settings.worker.trigger_max_depth = 3  # the workers that end the runs read it
    deploy(store, "ping", "pong")
    first = start(store, "ping", n=0)
    drain(store, settings)
    pings, pongs = runs_of(store, "ping"), runs_of(store, "pong")
    assert len(pings) == 2 and len(pongs) == 2  # ping(0) pong(1) ping(2) pong(3)
    chain = sorted(pings + pongs, key=lambda r: r["params"]["n"])
    assert [r["params"]["n"] for r in chain] == [0, 1, 2, 3]
    assert [(r["trigger"] or {}).get("depth", 0) for r in chain] == [0, 1, 2, 3]
    assert chain[0]["id"] == first
    (last,) = firings(store, chain[-1]["id"])
    assert last["run_id"] is None
    assert "depth limit" in last["error"] and "FERRYMAN_TRIGGER_MAX_DEPTH=3" in last["error"]


def test_unknown_step_or_param_of_the_source_is_refused_at_register(store: Store) -> None:
    deploy(store, "extract")
    for name, what in (("wrong_step", "no step 'nope'"), ("wrong_param", "no parameter 'nope'")):
        with pytest.raises(InvalidInput) as err, store.write() as conn:
            register(conn, "default", load_pipeline(f"{PIPES}:{name}"))
        assert what in err.value.message
    with store.read() as conn:
        names = conn.execute(sa.text("SELECT name FROM pipelines")).scalars().all()
    assert set(names) == {"extract"}  # nothing stored


def test_unregistered_source_is_a_warning_then_checked_when_it_fires(
    store: Store, settings: Settings
) -> None:
    (pv,) = deploy(store, "early")
    assert pv.warnings and "not registered" in pv.warnings[0]
    extract = load_pipeline(f"{PIPES}:extract")
    check = extract.step("check").model_copy(update={"depends_on": []})
    later = PipelineSpec.model_validate(
        {**extract.model_dump(), "name": "later", "steps": [check.model_dump()]}
    )
    with store.write() as conn:  # a pipeline "later" without a step "load"
        pv_later = register(conn, "default", later)
    a = RunService(store).start_version(pv_later, {}).id
    drain(store, settings)
    assert runs_of(store, "early") == []
    (f,) = firings(store, a)
    assert "step 'load' of the triggering run has no output" in f["error"]


def test_reregistering_without_triggers_removes_them(store: Store, settings: Settings) -> None:
    deploy(store, "report")
    spec = load_pipeline(f"{PIPES}:report").model_copy(update={"triggers": []})
    with store.write() as conn:
        register(conn, "default", spec)
    start(store, "extract")
    drain(store, settings)
    assert runs_of(store, "report") == []


def test_other_namespace(store: Store, settings: Settings) -> None:
    spec = load_pipeline(f"{PIPES}:alert")
    t = spec.triggers[0].model_copy(update={"namespace": "prod"})
    with store.write() as conn:
        register(conn, "team", spec.model_copy(update={"triggers": [t]}))
    a = start(store, "extract", namespace="prod", fail=True)
    drain(store, settings)
    (alert,) = runs_of(store, "alert")
    assert alert["namespace"] == "team" and alert["trigger"]["run_id"] == a


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process groups")
def test_worker_killed_mid_run_then_restarted_fires_once(
    store: Store, settings: Settings, tmp_path: Path
) -> None:
    deploy(store, "after_slow")
    marker = tmp_path / "marker"
    a = start(store, "slow_extract", marker=str(marker))
    env = {
        **os.environ,
        "FERRYMAN_DATABASE_URL": settings.db_url,
        "FERRYMAN_HOME": str(settings.home),
        "FERRYMAN_LEASE_SECONDS": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", "from ferryman.cli.app import main; main()", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert time.monotonic() < deadline, "the worker never started the step"
            assert proc.poll() is None, "the worker died"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)  # the worker and its step process
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    fast = settings.updated(lease_seconds=1.0, heartbeat_seconds=0.3)
    drain(store, fast)
    (ra,) = runs_of(store, "slow_extract")
    assert ra["state"] == "succeeded"
    assert ra["nodes"][0]["attempt"] >= 2  # the killed attempt was retried
    (rb,) = runs_of(store, "after_slow")
    assert rb["params"] == {"rows": 10} and rb["trigger"]["run_id"] == a
    assert len(firings(store, a)) == 1


# -- YAML, CLI and API ----------------------------------------------------------------

REPORT_YAML = f"""
name: yreport
params:
  day: string
  rows: integer
  source_run: string
steps:
  - name: record
    function: {PIPES}:record
    inputs:
      day: "${{params.day}}"
      rows: "${{params.rows}}"
      source_run: "${{params.source_run}}"
triggers:
  - pipeline: extract
    state: succeeded
    params:
      day: "${{trigger.params.day}}"
      rows: "${{trigger.steps.load}}"
      source_run: "${{trigger.run.id}}"
    labels: {{via: yaml}}
"""


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ferryman", *args],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_yaml_trigger_through_the_cli(store: Store, settings: Settings, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "FERRYMAN_HOME": str(settings.home),
        "FERRYMAN_DATABASE_URL": settings.db_url,
        "COLUMNS": "250",
    }
    (tmp_path / "yreport.yaml").write_text(REPORT_YAML)
    r = cli(env, "deploy", str(tmp_path / "yreport.yaml"))
    assert r.returncode == 0, r.stderr
    assert "warning:" in r.stdout and "not registered" in r.stdout  # extract comes later
    r = cli(env, "pipelines", "describe", "yreport")
    assert r.returncode == 0, r.stderr
    assert "default/extract" in r.stdout and "rows = ${trigger.steps.load}" in r.stdout
    assert "inherited + via=yaml" in r.stdout
    a = start(store, "extract", day="2024-02-02")
    drain(store, settings)
    (b,) = runs_of(store, "yreport")
    assert b["params"] == {"day": "2024-02-02", "rows": 100, "source_run": a}
    r = cli(env, "runs", "get", a)
    assert f"triggered: default/yreport run {b['id']}" in r.stdout
    r = cli(env, "runs", "get", b["id"])
    assert f"triggered by: run {a} of default/extract (succeeded" in r.stdout
    (tmp_path / "bad.yaml").write_text(REPORT_YAML.replace("steps.load", "steps.nope"))
    r = cli(env, "deploy", str(tmp_path / "bad.yaml"))
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "'extract' has no step 'nope'" in r.stdout + r.stderr


def test_api_shows_triggers_and_refuses_bad_ones(store: Store, settings: Settings) -> None:
    import warnings

    from starlette.exceptions import StarletteDeprecationWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StarletteDeprecationWarning)
        from fastapi.testclient import TestClient

    from ferryman.api.app import create_app
    from ferryman.services.auth import Role, create_api_token, create_user

    with store.write() as conn:
        user = create_user(conn, "dev-bot", None, Role.DEVELOPER)  # registers code
        _, token = create_api_token(conn, user["id"], "tests")
    h = {"Authorization": f"Bearer {token}"}
    spec = load_pipeline(f"{PIPES}:report").model_dump(mode="json")
    with TestClient(create_app(settings, store)) as api:
        r = api.post("/namespaces/default/pipelines", json=spec, headers=h)
        assert r.status_code == 201, r.text
        assert "not registered" in r.json()["warnings"][0]
        bad = load_pipeline(f"{PIPES}:wrong_step").model_dump(mode="json")
        deploy(store, "extract")
        r = api.post("/namespaces/default/pipelines", json=bad, headers=h)
        assert r.status_code == 422
        assert "'extract' has no step 'nope'" in r.text
        unmapped = {**spec, "triggers": [{**spec["triggers"][0], "params": {"day": "x"}}]}
        r = api.post("/namespaces/default/pipelines", json=unmapped, headers=h)
        assert r.status_code == 422 and "does not map the required parameter" in r.text
        r = api.get("/namespaces/default/pipelines/report", headers=h)
        assert r.status_code == 200
        (t,) = r.json()["triggers"]
        assert t["pipeline"] == "extract" and t["namespace"] == "default"
        assert t["states"] == ["succeeded"] and t["params"]["rows"] == {"$step": "load"}
        a = start(store, "extract")
        drain(store, settings)
        (b,) = runs_of(store, "report")
        got = api.get(f"/runs/{a}", headers=h).json()
        assert got["triggered"][0]["run_id"] == b["id"]
        assert got["triggered"][0]["pipeline"] == "report"
        got = api.get(f"/runs/{b['id']}", headers=h).json()
        assert got["trigger"]["run_id"] == a and got["trigger"]["kind"] == "event"

"""Retries limited to the failures worth retrying (issue 12, item 11): python
steps' ``retry_on``/``no_retry_on`` (exception types, subclasses included,
reported by the real step process) and container steps'
``retry_on_exit_codes``/``no_retry_on_exit_codes``, through the real worker;
a failure not retried fails its step at once and says why."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ferryman.dsl.loader import load_pipeline
from ferryman.engine.worker import Worker
from ferryman.services.catalog import register
from ferryman.services.queries import get_logs, get_run
from ferryman.services.runs import RunService
from ferryman.settings import Settings
from ferryman.store.engine import Store
from ferryman.testing import FakeInfrastructure, FakeOutcome, run_pipeline

PIPES = Path(__file__).parent.parent / "pipelines" / "retrying.py"


def run_to_end(store: Store, settings: Settings, name: str, **params: Any) -> dict[str, Any]:
    with store.write() as conn:
        pv = register(conn, "default", load_pipeline(f"{PIPES}:{name}"))
    run_id = RunService(store).start_version(pv, params).id
    Worker(store, settings).run_until({run_id}, timeout=120)
    with store.read() as conn:
        return get_run(conn, run_id)


def test_python_steps_retry_only_the_listed_exceptions(store: Store, settings: Settings) -> None:
    run = run_to_end(store, settings, "picky")  # real step processes
    got = {n["name"].removeprefix("fail-"): (n["attempt"], n["error"]) for n in run["nodes"]}
    assert run["state"] == "failed"
    # listed (or a subclass of a listed class): every attempt is used
    for how in ("timeout", "refused", "transient"):
        attempts, error = got[how]
        assert attempts == 3, (how, error)
        assert "not retried" not in error
    assert got["timeout"][1] == "TimeoutError: failed: timeout"
    # not listed, or listed in no_retry_on (which wins): failed at once, saying why
    assert got["value"] == (
        1,
        "ValueError: failed: value (ValueError is not in retry_on; not retried)",
    )
    assert got["missing"] == (
        1,
        "FileNotFoundError: failed: missing (FileNotFoundError is in no_retry_on; not retried)",
    )
    assert got["key"] == (
        1,
        "KeyError: 'failed: key' (KeyError (a LookupError) is in no_retry_on; not retried)",
    )
    assert got["permanent"] == (
        1,
        "Permanent: failed: permanent (retrying.Permanent is in no_retry_on; not retried)",
    )
    with store.read() as conn:
        lines = get_logs(conn, run["id"], node="fail-value")
    assert [r["attempt"] for r in lines if r["line"] == "failing with value"] == [1]


def test_failures_that_are_no_exception_follow_retries(store: Store, settings: Settings) -> None:
    # a step timeout is ferryman's, not the step's exception: retried as before
    run = run_to_end(store, settings, "sleepy")
    (n,) = run["nodes"]
    assert (run["state"], n["attempt"], n["error"]) == ("failed", 3, "timed out after 1s")


def test_container_steps_retry_only_the_listed_exit_codes() -> None:
    fake = FakeInfrastructure(
        outcomes={
            # 75 is retried, then 1 is not
            "only-75": [FakeOutcome(exit_code=75), FakeOutcome(exit_code=1)],
            # 1 is retried, then 2 is not
            "not-2": [FakeOutcome(exit_code=1), FakeOutcome(exit_code=2)],
        }
    )
    result = run_pipeline(f"{PIPES}:exits", infrastructure=fake)
    assert result.attempts == {"only-75": 2, "not-2": 2}
    assert result.errors == {
        "only-75": "exit code 1 (exit code 1 is not in retry_on_exit_codes; not retried)",
        "not-2": "exit code 2 (exit code 2 is in no_retry_on_exit_codes; not retried)",
    }


def test_a_scripted_exception_is_judged_like_a_real_one() -> None:
    from tests.pipelines.retrying import Permanent

    fake = FakeInfrastructure(
        outcomes={
            "fail-transient": FakeOutcome(exit_code=1, raises="retrying.Transient"),
            "fail-permanent": FakeOutcome(exit_code=1, error="Permanent: no", raises=Permanent),
        }
    )
    result = run_pipeline(f"{PIPES}:picky", infrastructure=fake)
    assert result.attempts["fail-transient"] == 3
    assert result.attempts["fail-permanent"] == 1
    assert "tests.pipelines.retrying.Permanent is in no_retry_on" in result.errors["fail-permanent"]

"""``ferryman.testing``: the fake infrastructure through the real engine, and
``run_pipeline`` (the contract every infrastructure passes, the fake
included, is tests/contract/test_infrastructures.py)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from ferryman import pipeline, step
from ferryman.domain.param_errors import ParamsInvalid
from ferryman.domain.spec import ContainerStep, FunctionRef, PipelineSpec, PythonStep
from ferryman.infra.base import EXIT_KILLED
from ferryman.infra.registry import available
from ferryman.testing import FakeInfrastructure, FakeKill, FakeOutcome, run_pipeline

BASIC = Path(__file__).resolve().parents[1] / "pipelines" / "basic.py"


@step
def double(x: int) -> int:
    print(f"doubling {x}")
    return 2 * x


@step
def report(value: int) -> str:
    return f"value={value}"


@pipeline
def doubling(x: int = 2) -> None:
    report(double(x))


def test_unscripted_python_steps_run_their_functions() -> None:
    fake = FakeInfrastructure()
    result = run_pipeline(f"{BASIC}:fan", {"n": 5}, infrastructure=fake)
    assert result.succeeded, result
    assert result.outputs["total"] == sum(x * x for x in range(5))
    assert result.logs["square_sum"] == ["shard 0 of 3", "to stderr"]
    # every step ran on the fake, whatever the pipeline declared (inline, process)
    assert sorted(la.node for la in fake.launches) == sorted(result.steps)
    assert result.attempts == dict.fromkeys(result.steps, 1)


def test_a_pipeline_object_and_a_spec_are_accepted_too() -> None:
    result = run_pipeline(doubling, {"x": 21})
    assert (result.state, result.outputs) == ("succeeded", {"double": 42, "report": "value=42"})
    assert result.logs["double"] == ["doubling 21"]
    again = run_pipeline(doubling.spec(), {"x": 1})
    assert again.outputs["report"] == "value=2"


def test_outcomes_are_scripted_per_attempt() -> None:
    fake = FakeInfrastructure(
        outcomes={
            "flaky": [
                FakeOutcome(exit_code=1, error="attempt 1 fails", stderr=["boom 1"]),
                FakeOutcome(exit_code=2),
                FakeOutcome(value=7, stdout=["third time lucky"]),
            ]
        }
    )
    result = run_pipeline(f"{BASIC}:retrying", {"counter": "/nonexistent"}, infrastructure=fake)
    assert result.succeeded, result
    assert result.outputs == {"flaky": 7}
    assert result.attempts == {"flaky": 3}
    assert [la.attempt for la in fake.launches_of("flaky")] == [1, 2, 3]
    assert result.logs["flaky"] == ["boom 1", "third time lucky"]


def test_a_scripted_failure_fails_the_run_with_its_error() -> None:
    fake = FakeInfrastructure(outcomes={"boom": FakeOutcome(exit_code=1, error="nope")})
    result = run_pipeline(f"{BASIC}:failing", infrastructure=fake)
    assert result.state == "failed"
    assert result.steps == {
        "ok": "succeeded",
        "boom": "failed",
        "ok-2": "skipped",
        "ok-3": "succeeded",
    }
    assert result.errors == {"boom": "nope"}
    assert "ok-2" not in {la.node for la in fake.launches}


def test_a_hanging_step_is_killed_by_its_timeout() -> None:
    fake = FakeInfrastructure(outcomes={"sleepy": FakeOutcome(hang=True, stdout=["zz"])})
    t0 = time.monotonic()
    result = run_pipeline(f"{BASIC}:slow", infrastructure=fake)
    assert time.monotonic() - t0 < 20
    assert result.state == "failed"
    assert result.errors["sleepy"].startswith("timed out after 1s")
    assert result.logs["sleepy"] == ["zz"]
    (kill,) = fake.kills
    assert kill.step == "sleepy" and kill.identifier.startswith("fake:")


def test_a_delay_holds_the_step() -> None:
    fake = FakeInfrastructure(outcomes={"double": FakeOutcome(value=5, delay=0.5)})
    t0 = time.monotonic()
    result = run_pipeline(doubling, {"x": 1}, infrastructure=fake)
    assert time.monotonic() - t0 >= 0.5
    assert result.outputs == {"double": 5, "report": "value=5"}


def test_container_steps_exit_0_unless_scripted() -> None:
    spec = PipelineSpec(
        name="boxes",
        steps=[
            ContainerStep(name="build", image="example/builder:1", command=["make"]),
            ContainerStep(name="check", image="example/checker:1", depends_on=["build"]),
            PythonStep(
                name="after",
                function=FunctionRef(file=str(BASIC), qualname="ok"),
                inputs={"tag": "x"},
                depends_on=["check"],
            ),
        ],
    )
    result = run_pipeline(spec)
    assert result.succeeded and result.outputs == {"after": "x"}
    fake = FakeInfrastructure(outcomes={"check": FakeOutcome(exit_code=3, stdout=["3 issues"])})
    failed = run_pipeline(spec, infrastructure=fake)
    assert failed.steps == {"build": "succeeded", "check": "failed", "after": "skipped"}
    assert failed.errors == {"check": "exit code 3"}
    assert failed.logs["check"] == ["3 issues"]
    assert fake.launches_of("build")[0].step.kind == "container"


def test_parameters_are_validated_and_a_run_that_does_not_end_times_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ParamsInvalid):
        run_pipeline(doubling, {"x": "not a number"})
    # settings come from FERRYMAN_* variables: a worker that stops waits this
    # long for its steps to end before it kills them
    monkeypatch.setenv("FERRYMAN_GRACE_SECONDS", "0.5")
    fake = FakeInfrastructure(outcomes={"double": FakeOutcome(hang=True)})
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        run_pipeline(doubling, infrastructure=fake, timeout=1)
    assert time.monotonic() - t0 < 8
    assert [k.step for k in fake.kills] == ["double"]  # the worker stopped it on its way out


def test_a_given_home_keeps_the_database(tmp_path: Path) -> None:
    result = run_pipeline(doubling, home=tmp_path / "home")
    with sqlite3.connect(tmp_path / "home" / "ferryman.db") as db:
        (state,) = db.execute("SELECT state FROM runs WHERE id = ?", (result.run_id,)).fetchone()
    assert state == "succeeded"


def test_preview_and_kill_are_recorded() -> None:
    fake = FakeInfrastructure(outcomes={"s": FakeOutcome(hang=True)})
    from ferryman.infra.base import StepLaunch

    launch = StepLaunch(
        run_id="r",
        node="s",
        attempt=1,
        pipeline="p",
        namespace="default",
        step=PythonStep(name="s", function=FunctionRef(module="m", qualname="f")),
        inputs={"token": "t0p-secret"},
        params={},
        nonce="n",
        secrets={"TOKEN": "t0p-secret"},
    )
    preview = fake.preview(launch)
    assert preview["runs"] == "a scripted outcome" and preview["outcome"]["hang"] is True
    assert preview["inputs"] == {"token": "********"} and preview["env"] == {"TOKEN": "********"}
    assert fake.previews == [launch]
    identifier = fake.start(launch, lambda stream, line: None)
    fake.kill(identifier, 3)
    result = fake.watch(identifier)
    assert (result.status_code, result.reason) == (EXIT_KILLED, FakeInfrastructure.KILLED)
    assert fake.kills == [FakeKill(identifier, "s", 3)]


def test_the_fake_is_not_an_installed_infrastructure() -> None:
    # no deployment can send steps to it: it is handed to a worker's pool
    assert "fake" not in available()

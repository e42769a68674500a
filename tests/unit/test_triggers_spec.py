"""Trigger declarations: the spec's checks, the Python DSL and YAML (no I/O)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from ferryman import pipeline, step
from ferryman.domain.spec import (
    PipelineSpec,
    TriggerMappingError,
    TriggerSpec,
    resolve_trigger,
)
from ferryman.dsl.decorators import DSLError
from ferryman.dsl.triggers import TriggerError, on_run, output, param, run_field, run_id
from ferryman.dsl.yaml_loader import PipelineFileError, spec_from_mapping

STEP = {"name": "s", "function": {"module": "os.path", "qualname": "join"}}


def spec(triggers: list[dict[str, Any]], **params: dict[str, Any]) -> PipelineSpec:
    return PipelineSpec.model_validate(
        {
            "name": "b",
            "params": [{"name": k, **v} for k, v in params.items()],
            "steps": [STEP],
            "triggers": triggers,
        }
    )


def errors(exc: pytest.ExceptionInfo[ValidationError]) -> str:
    return str(exc.value)


# -- TriggerSpec ----------------------------------------------------------------------


def test_defaults_and_resolution() -> None:
    t = TriggerSpec(pipeline="a")
    assert t.states == ["succeeded"] and t.namespace is None and t.inherit_labels
    assert t.source("ns1") == ("ns1", "a")
    assert TriggerSpec(pipeline="a", namespace="prod").source("ns1") == ("prod", "a")
    expr = {
        "d": {"$param": "day"},
        "n": [{"$step": "load"}, 3],
        "r": {"$run": "id"},
        "lit": {"$value": {"$param": "not a reference"}},
    }
    got = resolve_trigger(expr, {"day": "2024-01-01"}, {"load": 7}, {"id": "r1"})
    assert got == {"d": "2024-01-01", "n": [7, 3], "r": "r1", "lit": {"$param": "not a reference"}}
    with pytest.raises(TriggerMappingError, match="step 'gone' of the triggering run"):
        resolve_trigger({"$step": "gone"}, {}, {}, {})
    params, steps = TriggerSpec(pipeline="a", params={"x": expr}).referenced()
    assert params == {"day"} and steps == {"load"}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"states": ["done"]}, "Input should be 'succeeded', 'failed' or 'cancelled'"),
        ({"states": []}, "list at least one state"),
        ({"states": ["failed", "failed"]}, "a state is listed twice"),
        ({"params": {"x": {"$run": "owner"}}}, "unknown run field 'owner'"),
        ({"params": {"x": {"$param": 3}}}, "$param needs a name"),
        ({"params": {"not-a-name": 1}}, "mapped name 'not-a-name' is not a parameter name"),
        ({"pipeline": "bad name!"}, "invalid pipeline name"),
        ({"namespace": "bad/ns"}, "invalid namespace name"),
        ({"when": "always"}, "Extra inputs are not permitted"),
    ],
)
def test_trigger_spec_rejects(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as exc:
        TriggerSpec.model_validate({"pipeline": "a", **fields})
    assert message in errors(exc)


def test_mapping_is_checked_against_the_triggered_pipeline() -> None:
    with pytest.raises(ValidationError) as exc:
        spec(
            [{"pipeline": "a", "params": {"day": {"$param": "day"}, "oops": 1}}],
            day={"type": "string"},
            rows={"type": "integer"},
        )
    text = errors(exc)
    assert "maps 'oops', which is not a parameter of 'b' (params: day, rows)" in text
    assert "does not map the required parameter(s) rows" in text  # both reported together
    with pytest.raises(ValidationError, match="repeats trigger 0 for state 'failed'"):
        spec([{"pipeline": "a", "states": ["failed"]}, {"pipeline": "a", "states": ["failed"]}])
    ok = spec(
        [{"pipeline": "a", "params": {"day": {"$param": "d"}}}],
        day={"type": "string"},
        rows={"type": "integer", "required": False, "default": 1},
    )
    assert ok.triggers[0].params == {"day": {"$param": "d"}}


def test_version_unchanged_for_pipelines_without_triggers() -> None:
    plain = PipelineSpec.model_validate({"name": "b", "steps": [STEP]})
    assert "triggers" not in plain.model_dump(mode="json")
    assert "triggers" not in plain.canonical_json()
    # The hash this spec had before triggers existed (computed with that code).
    assert plain.version == "0ec8e08d6e7af214"
    with_trigger = spec([{"pipeline": "a"}])
    assert with_trigger.version != plain.version
    again = PipelineSpec.model_validate(with_trigger.model_dump(mode="json"))
    assert again == with_trigger and again.version == with_trigger.version


# -- Python DSL -----------------------------------------------------------------------


@step
def work(day: str, rows: int) -> None:
    pass


def test_dsl_on_run_compiles_to_the_spec() -> None:
    @pipeline(
        triggers=[
            on_run(
                "extract",
                state="succeeded",
                params={
                    "day": param("day"),
                    "rows": output("load"),
                    "meta": {"run": run_id(), "state": run_field("state"), "k": [1, "x"]},
                },
                labels={"chained": "yes"},
            ),
            on_run("extract", state=["failed", "cancelled"], namespace="prod",
                   params={"day": "1970-01-01", "rows": 0}, inherit_labels=False),
        ]
    )  # fmt: skip
    def report(day: str, rows: int, meta: dict[str, Any] | None = None) -> None:
        work(day, rows)

    s = report.spec()
    first, second = s.triggers
    assert first.pipeline == "extract" and first.states == ["succeeded"]
    assert first.params == {
        "day": {"$param": "day"},
        "rows": {"$step": "load"},
        "meta": {"run": {"$run": "id"}, "state": {"$run": "state"}, "k": [1, "x"]},
    }
    assert first.labels == {"chained": "yes"} and first.inherit_labels
    assert second.states == ["failed", "cancelled"] and second.namespace == "prod"
    assert not second.inherit_labels


def test_dsl_literal_that_looks_like_a_reference_stays_literal() -> None:
    t = on_run("a", params={"x": {"$param": "day"}})
    assert t.params == {"x": {"$value": {"$param": "day"}}}


def test_dsl_errors_are_clear() -> None:
    with pytest.raises(TriggerError, match="unknown state"):
        on_run("a", state="done")  # type: ignore[arg-type]
    with pytest.raises(TriggerError, match="not JSON-serialisable"):
        on_run("a", params={"x": object()})
    with pytest.raises(TriggerError, match="output\\(\\) takes a non-empty name"):
        output("")
    with pytest.raises(TriggerError, match="unknown field"):
        run_field("owner")  # type: ignore[arg-type]

    @pipeline(triggers=["extract"])
    def bad(day: str) -> None:
        work(day, 1)

    with pytest.raises(DSLError, match="declare triggers with on_run"):
        bad.spec()

    @pipeline(triggers=[on_run("a", params={"nope": param("x")})])
    def unmapped(day: str) -> None:
        work(day, 1)

    with pytest.raises(DSLError, match="maps 'nope', which is not a parameter"):
        unmapped.spec()


# -- YAML -----------------------------------------------------------------------------


def yaml_spec(triggers: Any) -> PipelineSpec:
    return spec_from_mapping(
        {
            "name": "b",
            "params": {"day": "string", "rows": {"type": "integer", "default": 0}},
            "steps": [{"name": "s", "function": "os.path:join"}],
            "triggers": triggers,
        },
        Path("."),
        check_files=False,
    )


def test_yaml_triggers() -> None:
    s = yaml_spec(
        [
            {
                "pipeline": "extract",
                "state": "succeeded",
                "params": {
                    "day": "${trigger.params.day}",
                    "rows": "${trigger.steps.load}",
                },
                "labels": {"via": "yaml"},
            },
            {
                "pipeline": "extract",
                "namespace": "prod",
                "states": ["failed", "cancelled"],
                "params": {
                    "day": ["${trigger.run.id}", "$${trigger.run.id}", {"$param": "lit"}],
                },
            },
        ]
    )
    first, second = s.triggers
    assert first.params == {"day": {"$param": "day"}, "rows": {"$step": "load"}}
    assert first.labels == {"via": "yaml"}
    assert second.states == ["failed", "cancelled"] and second.namespace == "prod"
    assert second.params["day"] == [
        {"$run": "id"},
        "${trigger.run.id}",
        {"$value": {"$param": "lit"}},
    ]


def test_yaml_trigger_errors_list_every_problem() -> None:
    with pytest.raises(PipelineFileError) as exc:
        yaml_spec(
            [
                {"pipeline": "extract", "state": "done"},
                {"pipeline": "extract", "state": "failed", "states": ["failed"]},
                {"pipeline": "x", "params": {"day": "day ${trigger.params.day}"}},
                "extract",
                {"pipelin": "x"},
            ]
        )
    problems = exc.value.problems
    text = "\n".join(problems)
    assert "triggers[0].states[0]: Input should be 'succeeded', 'failed' or 'cancelled'" in text
    assert "triggers[1]: give either state or states, not both" in text
    assert "triggers[2].params.day" in text and "must be the whole value" in text
    assert "triggers[3]: must be a mapping" in text
    assert "triggers[4].pipelin: unknown field (did you mean 'pipeline'?)" in text
    with pytest.raises(PipelineFileError, match="unknown run field 'who'"):
        yaml_spec([{"pipeline": "a", "params": {"day": "${trigger.run.who}"}}])
    with pytest.raises(PipelineFileError, match="triggers: must be a list"):
        yaml_spec({"pipeline": "a"})

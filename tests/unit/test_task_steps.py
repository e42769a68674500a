"""Task steps (issue 15): the model, the DSL's ``task(...)``, YAML ``kind: task``."""

from __future__ import annotations

import textwrap

import pytest
import yaml
from pydantic import ValidationError

from ferryman import pipeline, step, task
from ferryman.domain.spec import PipelineSpec, TaskStep, parse_step
from ferryman.dsl.errors import DSLError
from ferryman.dsl.yaml_loader import PipelineFileError, spec_from_mapping
from ferryman.infra.base import EXIT_KILLED, RESULT_MARKER, OutputCapture
from ferryman.infra.registry import check_step, infrastructure_class
from ferryman.infra.step_kinds import step_kind


def test_task_step_model_defaults_to_the_task_infrastructure() -> None:
    s = parse_step({"name": "call", "kind": "task", "type": "http_job", "config": {"a": 1}})
    assert isinstance(s, TaskStep)
    assert (s.type, s.plugin, s.config, s.infrastructure) == ("http_job", None, {"a": 1}, "task")
    check_step(infrastructure_class("task"), s)  # runs there
    with pytest.raises(ValidationError, match="type"):
        parse_step({"name": "call", "kind": "task"})
    with pytest.raises(ValidationError, match="image"):
        parse_step({"name": "call", "kind": "task", "type": "x", "image": "busybox"})


def test_task_steps_hash_as_they_dump() -> None:
    spec = PipelineSpec.model_validate(
        {"name": "p", "steps": [{"name": "c", "kind": "task", "type": "http_call"}]}
    )
    again = PipelineSpec.model_validate(spec.model_dump())
    assert again.version == spec.version


@step
def produce() -> dict[str, int]:
    return {"n": 1}


@pipeline
def remote(region: str = "eu") -> None:
    out = produce()
    task(
        "submit",
        "http_job",
        config={"url": "http://x/{{ params.region }}", "body": {"region": region, "prev": out}},
        retries=2,
    )


def test_dsl_task_templates_params_and_outputs() -> None:
    spec = remote.spec()
    s = spec.step("submit")
    assert isinstance(s, TaskStep)
    assert s.config == {
        "url": "http://x/{{ params.region }}",
        "body": {"region": "{{ params.region }}", "prev": "{{ inputs.produce }}"},
    }
    assert s.inputs == {"produce": {"$step": "produce"}}
    assert s.depends_on == ["produce"]
    assert s.retries == 2


def test_dsl_task_outside_a_pipeline_and_bad_options() -> None:
    with pytest.raises(DSLError, match="inside a @pipeline"):
        task("x", "http_call")

    @pipeline
    def bad() -> None:
        task("x", "http_call", colour="red")

    with pytest.raises(DSLError, match="unknown step option"):
        bad.spec()


def test_yaml_task_step_adds_referenced_outputs_as_inputs() -> None:
    data = yaml.safe_load(
        textwrap.dedent(
            """
            name: p
            params: {region: {type: str, default: eu}}
            steps:
              - {name: load, function: m:f}
              - name: submit
                kind: task
                type: http_job
                plugin: http_job
                config:
                  url: "http://svc/${params.region}"
                  body: {prev: "${steps.load}"}
            """
        )
    )
    spec = spec_from_mapping(data)
    s = spec.step("submit")
    assert isinstance(s, TaskStep)
    assert s.depends_on == ["load"]
    assert s.inputs == {"load": {"$step": "load"}}
    assert s.plugin == "http_job"
    bad = {
        **data,
        "steps": [*data["steps"][:1], {**data["steps"][1], "config": {"u": "${steps.nope}"}}],
    }
    with pytest.raises(PipelineFileError) as exc:
        spec_from_mapping(bad)
    assert any("steps[1].config.u" in p for p in exc.value.problems)


def test_task_kind_reads_the_result_line_or_the_reason() -> None:
    s = parse_step({"name": "c", "kind": "task", "type": "t"})
    kind = step_kind("task")
    lines: list[tuple[str, str]] = []
    cap = OutputCapture("n1", lambda st, ln: lines.append((st, ln)), lambda t: t)
    cap("stdout", RESULT_MARKER + 'n1 {"ok": true, "value": {"id": 7}}')
    r = kind.read_result(s, 0, cap, None)
    assert (r.ok, r.output, r.has_output) == (True, {"id": 7}, True)
    empty = OutputCapture("n1", lambda st, ln: None, lambda t: t)
    assert kind.read_result(s, 1, empty, "remote said no").error == "remote said no"
    assert kind.read_result(s, EXIT_KILLED, empty, None).error == "killed"

"""Step kinds: the union of step models, hash compatibility with stored specs,
the kind objects that read results, and infrastructures declaring their kinds
(docs/decisions/0008-open-step-kinds.md)."""

from __future__ import annotations

import json
import textwrap
from typing import Any, ClassVar, get_args

import pytest
import yaml
from pydantic import ValidationError

from ferryman.domain.spec import (
    STEP_MODELS,
    ContainerStep,
    FunctionRef,
    PipelineSpec,
    PythonStep,
    StepSpec,
    error_loc,
    parse_step,
)
from ferryman.dsl.yaml_loader import PipelineFileError, spec_from_mapping
from ferryman.infra.base import EXIT_KILLED, Infrastructure, LogSink, OutputCapture, Result
from ferryman.infra.base import StepLaunch as Launch
from ferryman.infra.docker import DockerInfrastructure
from ferryman.infra.inline import InlineInfrastructure
from ferryman.infra.kubernetes import KubernetesInfrastructure
from ferryman.infra.preview import preview_pipeline
from ferryman.infra.process import ProcessInfrastructure
from ferryman.infra.registry import UnsupportedStepKind, check_step, kind_problems, runners_of
from ferryman.infra.step_kinds import (
    STEP_KINDS,
    ContainerKind,
    PythonKind,
    UnknownStepKind,
    step_kind,
)

# --------------------------------------------------------------------------- hash compatibility

# Pipelines whose versions were computed with the flat step model, before step
# kinds were split. A change of any of these hashes means every re-deploy after
# an upgrade would make a new version.
PYTHON_ONLY: dict[str, Any] = {
    "name": "etl",
    "description": "Nightly ETL",
    "params": [
        {"name": "source", "type": "string", "required": False, "default": "s3://in"},
        {"name": "limit", "type": "integer", "required": False, "default": 10, "minimum": 1},
        {"name": "lang", "type": "string", "required": False, "default": "en"},
    ],
    "validators": [{"kind": "language", "fields": ["lang"]}],
    "steps": [
        {
            "name": "extract",
            "function": {"module": "etl.steps", "qualname": "extract"},
            "inputs": {"source": {"$param": "source"}, "limit": {"$param": "limit"}},
            "retries": 2,
            "retry_delay": 0.5,
            "timeout": 30,
            "infrastructure": "inline",
            "env": {"FOO": "bar", "UNSET_ME": None},
            "secrets": ["API_KEY"],
            "resources": {"cpu": "1", "memory": "1Gi"},
            "infra_overrides": {"image": "etl:1"},
        },
        {
            "name": "load",
            "kind": "python",
            "function": {"file": "/srv/etl/steps.py", "qualname": "Loader.load"},
            "inputs": {"rows": {"$step": "extract"}, "opts": {"$value": {"$step": "x"}}},
            "depends_on": ["extract"],
        },
    ],
    "labels": {"team": "data"},
    "timeout": 600,
}
CONTAINERS: dict[str, Any] = {
    "name": "boxes",
    "infrastructure": "docker",
    "steps": [
        {"name": "make", "function": {"module": "m", "qualname": "f"}, "infrastructure": "inline"},
        {
            "name": "report",
            "kind": "container",
            "image": "busybox:1.36",
            "command": ["sh", "-c"],
            "args": ["echo {{ inputs.make }} ${params.day}"],
            "inputs": {"make": {"$step": "make"}},
            "depends_on": ["make"],
            "retries": 1,
        },
        {"name": "plain", "kind": "container", "image": "alpine", "depends_on": ["report"]},
        {"name": "cmd-only", "kind": "container", "image": "alpine", "command": ["true"]},
    ],
}
TRIGGERED: dict[str, Any] = {
    "name": "after",
    "params": [{"name": "day", "type": "date"}],
    "steps": [
        {
            "name": "a",
            "function": {"module": "m", "qualname": "f"},
            "inputs": {"day": {"$param": "day"}},
        }
    ],
    "triggers": [
        {
            "pipeline": "etl",
            "states": ["succeeded", "failed"],
            "params": {"day": {"$run": "id"}},
            "labels": {"chained": "yes"},
        }
    ],
}
YAML_WITH_CONTAINERS = """
name: ydemo
infrastructure: docker
params:
  day: {type: str, default: "2024-01-01"}
steps:
  - name: make
    function: mypkg.mod:make
    infrastructure: inline
    inputs: {tag: "${params.day}"}
  - name: report
    kind: container
    image: busybox
    inputs: {make: "${steps.make}"}
    command: ["echo", "made ${steps.make} from ${params.day}"]
  - name: bare
    kind: container
    image: busybox
    depends_on: [report]
"""

# What the flat model stored for CONTAINERS (``model_dump(mode="json")``): every
# step carries every kind's fields, null where they do not apply.
STORED_CONTAINERS = """
{"name": "boxes", "description": "", "params": [], "validators": [], "steps": [
 {"name": "make", "kind": "python", "function": {"module": "m", "file": null, "qualname": "f"},
  "image": null, "command": null, "args": null, "inputs": {}, "depends_on": [], "retries": 0,
  "retry_delay": 1.0, "retry_backoff": 2.0, "retry_jitter": 0.1, "retry_max_delay": 300.0,
  "timeout": null, "infrastructure": "inline", "infra_overrides": {}, "env": {}, "secrets": [],
  "resources": {}},
 {"name": "report", "kind": "container", "function": null, "image": "busybox:1.36",
  "command": ["sh", "-c"], "args": ["echo {{ inputs.make }} ${params.day}"],
  "inputs": {"make": {"$step": "make"}}, "depends_on": ["make"], "retries": 1,
  "retry_delay": 1.0, "retry_backoff": 2.0, "retry_jitter": 0.1, "retry_max_delay": 300.0,
  "timeout": null, "infrastructure": null, "infra_overrides": {}, "env": {}, "secrets": [],
  "resources": {}},
 {"name": "plain", "kind": "container", "function": null, "image": "alpine", "command": null,
  "args": null, "inputs": {}, "depends_on": ["report"], "retries": 0, "retry_delay": 1.0,
  "retry_backoff": 2.0, "retry_jitter": 0.1, "retry_max_delay": 300.0, "timeout": null,
  "infrastructure": null, "infra_overrides": {}, "env": {}, "secrets": [], "resources": {}},
 {"name": "cmd-only", "kind": "container", "function": null, "image": "alpine",
  "command": ["true"], "args": null, "inputs": {}, "depends_on": [], "retries": 0,
  "retry_delay": 1.0, "retry_backoff": 2.0, "retry_jitter": 0.1, "retry_max_delay": 300.0,
  "timeout": null, "infrastructure": null, "infra_overrides": {}, "env": {}, "secrets": [],
  "resources": {}}],
 "infrastructure": "docker", "timeout": null, "labels": {}}
"""


@pytest.mark.parametrize(
    ("data", "version"),
    [
        (PYTHON_ONLY, "54c53e68b5ccf28c"),
        (CONTAINERS, "9ed2f6adb56e4c54"),
        (TRIGGERED, "0d11e708355c17bf"),
    ],
)
def test_versions_are_those_of_the_flat_step_model(data: dict[str, Any], version: str) -> None:
    spec = PipelineSpec.model_validate(data)
    assert spec.version == version
    # and they survive a round trip through today's JSON
    assert PipelineSpec.model_validate_json(spec.model_dump_json()).version == version


def test_yaml_file_version_is_that_of_the_flat_step_model() -> None:
    spec = spec_from_mapping(yaml.safe_load(YAML_WITH_CONTAINERS))
    assert spec.version == "b1c94fefa19f3383"


def test_stored_flat_json_loads_into_the_kind_models_and_hashes_the_same() -> None:
    stored = PipelineSpec.model_validate_json(STORED_CONTAINERS)
    assert stored == PipelineSpec.model_validate(CONTAINERS)
    assert stored.version == "9ed2f6adb56e4c54"
    make, report, plain, _ = stored.steps
    assert isinstance(make, PythonStep) and make.function == FunctionRef(module="m", qualname="f")
    assert isinstance(report, ContainerStep) and report.args == [
        "echo {{ inputs.make }} ${params.day}"
    ]
    assert isinstance(plain, ContainerStep) and plain.command is None
    # the canonical JSON is exactly the stored document
    assert json.loads(stored.canonical_json()) == json.loads(STORED_CONTAINERS)


def test_a_stored_step_without_kind_is_a_python_step() -> None:
    step = parse_step({"name": "a", "function": {"module": "m", "qualname": "f"}, "image": None})
    assert isinstance(step, PythonStep) and step.kind == "python"


def test_legacy_fields_must_be_null() -> None:
    # a python step never had an image that meant something: not silently dropped
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        parse_step({"name": "a", "function": {"module": "m", "qualname": "f"}, "image": "x"})
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        parse_step({"name": "a", "kind": "container", "image": "x", "function": {"module": "m"}})


def test_model_dump_has_only_the_kinds_own_fields() -> None:
    spec = PipelineSpec.model_validate(CONTAINERS)
    make, report = spec.model_dump(mode="json")["steps"][:2]
    assert "image" not in make and "command" not in make and make["function"]["module"] == "m"
    assert "function" not in report and report["image"] == "busybox:1.36"


# --------------------------------------------------------------------------- the union


def test_every_member_of_the_union_is_a_known_kind_with_a_kind_object() -> None:
    members = get_args(get_args(StepSpec)[0])
    assert len(members) == len(STEP_MODELS) == len(STEP_KINDS)
    for member in members:
        model, tag = get_args(member)
        assert STEP_MODELS[tag.tag] is model
        assert model.model_fields["kind"].default == tag.tag
        assert step_kind(tag.tag).name == tag.tag


def test_unknown_kind_is_rejected_with_a_clear_message() -> None:
    with pytest.raises(ValidationError) as exc:
        PipelineSpec.model_validate(
            {"name": "p", "steps": [{"name": "call", "kind": "lambda", "type": "http_job"}]}
        )
    (err,) = exc.value.errors(include_url=False)
    assert err["loc"] == ("steps", 0)
    assert err["msg"] == (
        "Value error, step 'call': unknown kind 'lambda' (known: container, python, task)"
    )
    with pytest.raises(ValidationError, match="unknown kind 5"):
        parse_step({"name": "a", "kind": 5})
    with pytest.raises(ValidationError, match="a step must be a mapping"):
        parse_step("a")


def test_unknown_kind_in_a_yaml_file() -> None:
    data = yaml.safe_load(
        textwrap.dedent(
            """
            name: p
            steps:
              - {name: ok, function: m:f}
              - {name: call, kind: lambda, type: http_job}
            """
        )
    )
    with pytest.raises(PipelineFileError) as exc:
        spec_from_mapping(data)
    assert exc.value.problems == [
        "steps[1]: step 'call': unknown kind 'lambda' (known: container, python, task)"
    ]


def test_yaml_errors_inside_a_step_name_no_kind_tag() -> None:
    data = {
        "name": "p",
        "steps": [{"name": "c", "kind": "container", "image": "b", "comand": ["x"], "retries": -1}],
    }
    with pytest.raises(PipelineFileError) as exc:
        spec_from_mapping(data)
    assert sorted(exc.value.problems) == [
        "steps[0].comand: unknown field (did you mean 'command'?)",
        "steps[0].retries: Input should be greater than or equal to 0",
    ]


@pytest.mark.parametrize("kind", ["python", "container"])
def test_a_missing_function_or_image_is_reported_after_the_other_problems(kind: str) -> None:
    # as with the flat model: other fields' errors first, the missing field alone
    with pytest.raises(ValidationError) as exc:
        parse_step({"name": "a", "kind": kind, "retries": -1})
    assert [error_loc(e["loc"]) for e in exc.value.errors()] == [("retries",)]
    what = "a function" if kind == "python" else "an image"
    with pytest.raises(ValidationError, match=f"{kind} step 'a' needs {what}"):
        parse_step({"name": "a", "kind": kind})


def test_unknown_step_kind_object() -> None:
    with pytest.raises(UnknownStepKind, match=r"unknown step kind 'lambda' \(known: container"):
        step_kind("lambda")


# --------------------------------------------------------------------------- reading results


def _capture(*lines: str) -> OutputCapture:
    capture = OutputCapture("n0nce", lambda s, line: None, lambda s: s)
    for line in lines:
        capture("stdout", line)
    return capture


def _result_line(payload: str) -> str:
    return "\x1eferryman-result n0nce " + payload


PY = PythonStep(name="s", function=FunctionRef(module="m", qualname="f"))
BOX = ContainerStep(name="c", image="busybox")


def test_python_result_line_present() -> None:
    r = PythonKind().read_result(PY, 0, _capture(_result_line('{"ok": true, "value": [1]}')), None)
    assert (r.ok, r.output, r.has_output, r.error) == (True, [1], True, "")
    r = PythonKind().read_result(PY, 0, _capture(_result_line('{"ok": true, "value": null}')), None)
    assert (r.ok, r.output, r.has_output) == (True, None, True)


def test_python_result_line_says_it_failed() -> None:
    cap = _capture(_result_line('{"ok": false, "error": "ValueError: no", "kind": "exception"}'))
    r = PythonKind().read_result(PY, 1, cap, None)
    assert (r.ok, r.error, r.has_output) == (False, "ValueError: no", False)
    # an ok line with a non-zero exit code is still a failure
    r = PythonKind().read_result(PY, 3, _capture(_result_line('{"ok": true, "value": 1}')), None)
    assert (r.ok, r.error) == (False, "exit code 3")


def test_python_result_line_absent() -> None:
    kind = PythonKind()
    r = kind.read_result(PY, 3, _capture("just output"), None)
    assert (r.ok, r.error) == (False, "step ended without a result (exit code 3)")
    r = kind.read_result(PY, -1, _capture(), "container disappeared")
    assert r.error == "step ended without a result (container disappeared)"
    r = kind.read_result(PY, EXIT_KILLED, _capture(), "killed: SIGTERM")
    assert r.error == "step ended without a result (killed)"
    # a line with another attempt's nonce is not this attempt's result
    other = "\x1eferryman-result other {}".format('{"ok": true, "value": 1}')
    assert kind.read_result(PY, 0, _capture(other), None).ok is False


@pytest.mark.parametrize("garbage", ["{not json", "[1, 2]", '"ok"'])
def test_python_result_line_garbage(garbage: str) -> None:
    r = PythonKind().read_result(PY, 0, _capture(_result_line(garbage)), None)
    assert (r.ok, r.error) == (False, "the step's result line could not be parsed")


def test_container_exit_codes() -> None:
    kind = ContainerKind()
    r = kind.read_result(BOX, 0, _capture(_result_line('{"ok": true, "value": 1}')), None)
    assert (r.ok, r.has_output, r.output) == (True, False, None)  # containers have no output
    assert kind.read_result(BOX, 3, _capture(), None).error == "exit code 3"
    r = kind.read_result(BOX, 137, _capture(), "out of memory (OOMKilled, exit code 137)")
    assert (r.ok, r.error) == (False, "out of memory (OOMKilled, exit code 137)")


def test_only_python_steps_need_the_runtime_payload() -> None:
    assert step_kind("python").needs_payload and not step_kind("container").needs_payload


# --------------------------------------------------------------------------- infrastructures


def test_builtin_infrastructures_declare_their_kinds() -> None:
    assert ProcessInfrastructure.kinds == {"python"}
    assert InlineInfrastructure.kinds == {"python"}
    assert DockerInfrastructure.kinds == {"python", "container"}
    assert KubernetesInfrastructure.kinds == {"python", "container"}
    assert not InlineInfrastructure.records_identifier
    assert ProcessInfrastructure.records_identifier and DockerInfrastructure.records_identifier
    assert runners_of("container") == ["docker", "kubernetes"]


class Undeclared(Infrastructure):
    """A third-party infrastructure written before kinds were declared."""

    kind = "undeclared"

    def start(self, launch: Launch, sink: LogSink) -> str:
        raise AssertionError("never started")

    def watch(self, identifier: str) -> Result:
        raise AssertionError("never watched")

    def kill(self, identifier: str, grace_seconds: float) -> None:
        raise AssertionError("never killed")

    def preview(self, launch: Launch) -> dict[str, Any]:
        raise AssertionError("never previewed")


class OnlyBoxes(Undeclared):
    """A third-party infrastructure that runs container steps only."""

    kind = "boxes"
    kinds: ClassVar[frozenset[str]] = frozenset({"container"})


def test_an_infrastructure_refuses_a_kind_it_does_not_declare() -> None:
    check_step(OnlyBoxes, BOX)
    with pytest.raises(UnsupportedStepKind) as exc:
        check_step(OnlyBoxes, PY)
    assert str(exc.value) == (
        "step 's' is a python step: the boxes infrastructure runs container steps only; "
        "python steps run on docker or inline or kubernetes or process"
    )
    with pytest.raises(UnsupportedStepKind) as exc:
        check_step(ProcessInfrastructure, BOX)
    assert str(exc.value) == (
        "step 'c' is a container step: the process infrastructure runs python steps only; "
        "container steps run on docker or kubernetes"
    )


def test_an_infrastructure_that_declares_no_kinds_is_given_every_kind() -> None:
    assert Undeclared.kinds == set(STEP_MODELS)
    check_step(Undeclared, PY)
    check_step(Undeclared, BOX)


def test_deploy_time_check_names_each_step_that_cannot_run() -> None:
    spec = PipelineSpec(
        name="p",
        steps=[
            PY,
            ContainerStep(name="on-process", image="b"),
            ContainerStep(name="on-docker", image="b", infrastructure="docker"),
            ContainerStep(name="elsewhere", image="b", infrastructure="not-installed-here"),
        ],
    )
    problems = kind_problems(spec)
    assert [i for i, _ in problems] == [1]
    assert problems[0][1].startswith("step 'on-process' is a container step: the process")
    assert kind_problems(spec.model_copy(update={"infrastructure": "docker"})) == []


def test_preview_refuses_a_kind_the_infrastructure_does_not_run() -> None:
    spec = PipelineSpec(name="p", steps=[BOX])
    with pytest.raises(UnsupportedStepKind, match="container steps run on docker or kubernetes"):
        preview_pipeline(spec, {})
    (shown,) = preview_pipeline(spec, {}, infrastructure="docker")
    assert shown.launch["image"] == "busybox"

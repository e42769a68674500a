"""Which failures are retried (issue 12, item 11): the names, the matching,
the spec fields (and that unset they change no pipeline's version), the
YAML and Python forms, and the runtime's names of an exception's classes."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from ferryman import container, pipeline, step
from ferryman.domain.retry import (
    check_exception_names,
    exception_refusal,
    exit_code_refusal,
    names_match,
)
from ferryman.domain.spec import ContainerStep, PipelineSpec, PythonStep
from ferryman.dsl.errors import DSLError
from ferryman.dsl.yaml_loader import PipelineFileError, spec_from_mapping
from ferryman.infra.base import EXIT_KILLED, EXIT_LOST, OutputCapture
from ferryman.infra.step_kinds import step_kind
from ferryman.runtime.loader import exception_types, load_file, type_name

FUNC = {"module": "m", "qualname": "f"}
OSERROR_MRO = ["ConnectionRefusedError", "ConnectionError", "OSError", "Exception", "BaseException"]


def test_names_are_dotted_and_builtins_bare() -> None:
    assert check_exception_names(["TimeoutError", "builtins.OSError", "a.b.C", "TimeoutError"]) == [
        "TimeoutError",
        "OSError",
        "a.b.C",
    ]
    for bad in ["", "a b", "a.", "1a", "a:b", 3, None]:
        with pytest.raises(ValueError, match="is not an exception type's name"):
            check_exception_names([bad])


def test_matching() -> None:
    assert names_match("OSError", "OSError")
    # a bare name is a built-in: it never matches a class of a module
    assert not names_match("ConnectionError", "requests.exceptions.ConnectionError")
    assert not names_match("requests.exceptions.ConnectionError", "ConnectionError")
    # one file, by path in one process and as a package module in another
    assert names_match("retrying.Permanent", "tests.pipelines.retrying.Permanent")
    assert names_match("tests.pipelines.retrying.Permanent", "retrying.Permanent")
    assert not names_match("retrying.Permanent", "other_retrying.Permanent")


def test_refusals() -> None:
    assert exception_refusal("ValueError", ["ValueError"], [], []) is None
    assert exception_refusal("ValueError", ["ValueError", "Exception"], ["TimeoutError"], []) == (
        "ValueError is not in retry_on; not retried"
    )
    # a listed class matches its subclasses
    assert exception_refusal("ConnectionRefusedError", OSERROR_MRO, ["OSError"], []) is None
    assert exception_refusal("ConnectionRefusedError", OSERROR_MRO, [], ["OSError"]) == (
        "ConnectionRefusedError (a OSError) is in no_retry_on; not retried"
    )
    # no_retry_on wins over retry_on
    mro = ["FileNotFoundError", "OSError", "Exception", "BaseException"]
    assert exception_refusal("FileNotFoundError", mro, ["OSError"], ["FileNotFoundError"]) == (
        "FileNotFoundError is in no_retry_on; not retried"
    )
    assert exit_code_refusal(75, [75], []) is None
    assert exit_code_refusal(1, [75], []) == (
        "exit code 1 is not in retry_on_exit_codes; not retried"
    )
    assert exit_code_refusal(2, [], [2]) == "exit code 2 is in no_retry_on_exit_codes; not retried"
    assert exit_code_refusal(3, [], [2]) is None


def test_unset_fields_leave_the_version_unchanged() -> None:
    base: dict[str, Any] = {
        "name": "p",
        "steps": [
            {"name": "a", "function": FUNC, "retries": 2},
            {"name": "b", "kind": "container", "image": "alpine", "retries": 2},
        ],
    }
    plain = PipelineSpec.model_validate(base)
    empty = json.loads(json.dumps(base))
    empty["steps"][0].update(retry_on=[], no_retry_on=[])
    empty["steps"][1].update(retry_on_exit_codes=[], no_retry_on_exit_codes=[])
    assert PipelineSpec.model_validate(empty).version == plain.version
    for step_dump in plain.model_dump(mode="json")["steps"]:
        assert not {"retry_on", "no_retry_on", "retry_on_exit_codes"} & set(step_dump)
    limited = json.loads(json.dumps(base))
    limited["steps"][0]["retry_on"] = ["TimeoutError"]
    spec = PipelineSpec.model_validate(limited)
    assert spec.version != plain.version
    assert PipelineSpec.model_validate_json(spec.model_dump_json()) == spec


def test_the_fields_belong_to_their_kind() -> None:
    a = PythonStep.model_validate({"name": "a", "function": FUNC, "retry_on": "TimeoutError"})
    assert a.retry_on == ["TimeoutError"]
    c = ContainerStep.model_validate({"name": "c", "image": "x", "retry_on_exit_codes": 75})
    assert c.retry_on_exit_codes == [75]
    with pytest.raises(ValueError, match="retry_on_exit_codes"):
        PythonStep.model_validate({"name": "a", "function": FUNC, "retry_on_exit_codes": [1]})
    with pytest.raises(ValueError, match="retry_on"):
        ContainerStep.model_validate({"name": "c", "image": "x", "retry_on": ["ValueError"]})
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        ContainerStep.model_validate({"name": "c", "image": "x", "retry_on_exit_codes": [0]})
    with pytest.raises(ValueError, match="X cannot be in both retry_on and no_retry_on"):
        PythonStep.model_validate(
            {"name": "a", "function": FUNC, "retry_on": ["X"], "no_retry_on": ["X"]}
        )


def test_yaml_takes_dotted_names_and_reports_bad_ones_by_path() -> None:
    spec = spec_from_mapping(
        {
            "name": "p",
            "steps": [
                {
                    "name": "fetch",
                    "function": "os.path:join",
                    "retries": 3,
                    "retry_on": ["TimeoutError", "requests.exceptions.ConnectionError"],
                    "no_retry_on": "builtins.ValueError",
                },
                {"name": "c", "kind": "container", "image": "a", "no_retry_on_exit_codes": [2]},
            ],
        }
    )
    fetch, c = spec.steps
    assert isinstance(fetch, PythonStep) and isinstance(c, ContainerStep)
    assert fetch.retry_on == ["TimeoutError", "requests.exceptions.ConnectionError"]
    assert fetch.no_retry_on == ["ValueError"]
    assert c.no_retry_on_exit_codes == [2]
    with pytest.raises(PipelineFileError) as info:
        spec_from_mapping(
            {"name": "p", "steps": [{"name": "a", "function": "m:f", "retry_on": ["not a name"]}]}
        )
    (problem,) = info.value.problems
    assert (
        problem.startswith("steps[0].retry_on: ") and "'not a name' is not an exception" in problem
    )


class Transient(Exception):
    pass


@step(retries=2, retry_on=[TimeoutError, Transient, "requests.exceptions.ConnectionError"])
def fetch() -> None: ...


def test_the_dsl_names_classes_as_the_runtime_does() -> None:
    @pipeline
    def p() -> None:
        fetch()
        container("c", "alpine", retries=1, retry_on_exit_codes=[75])

    a, c = p.spec().steps
    assert isinstance(a, PythonStep) and isinstance(c, ContainerStep)
    assert a.retry_on == [
        "TimeoutError",
        f"{__name__}.Transient",
        "requests.exceptions.ConnectionError",
    ]
    assert type_name(Transient) == f"{__name__}.Transient"
    assert c.retry_on_exit_codes == [75]


def test_the_dsl_refuses_what_cannot_be_named() -> None:
    class Local(Exception):
        pass

    for wrong, message in [
        ([int], "step 'fetch': retry_on: int is not an exception class"),
        ([Local], "exception class 'Local' must be defined at module level"),
    ]:

        @pipeline
        def p() -> None:
            fetch.with_options(retry_on=wrong)()  # noqa: B023 - called at once

        with pytest.raises(DSLError, match=message):
            p.spec()
    with pytest.raises(DSLError, match="an option of container steps; a python step has retry_on"):
        step(retry_on_exit_codes=[1])
    with pytest.raises(DSLError, match="a container step has retry_on_exit_codes"):

        @pipeline
        def q() -> None:
            container("c", "alpine", retry_on=[ValueError])

        q.spec()


def test_the_runtime_names_an_exceptions_classes(tmp_path: Path) -> None:
    assert exception_types(ConnectionRefusedError()) == {
        "type": "ConnectionRefusedError",
        "mro": OSERROR_MRO,
    }
    # a file whose stem names another module gets a made-up module name; its
    # classes are still named by the file's stem, as the DSL names them
    f = tmp_path / "json.py"
    f.write_text(textwrap.dedent("class Flaky(Exception):\n    pass\n"))
    module = load_file(str(f))
    assert module.__name__.startswith("_ferryman_file_")
    assert exception_types(module.Flaky())["type"] == "json.Flaky"


def _failed(step: Any, payload: dict[str, Any], code: int = 1) -> Any:
    cap = OutputCapture("n0nce", lambda s, line: None, lambda s: s)
    cap("stdout", f"\x1eferryman-result n0nce {json.dumps(payload)}")
    return step_kind(step.kind).read_result(step, code, cap, None)


def test_the_step_kinds_say_why_a_failure_is_not_retried() -> None:
    a = PythonStep.model_validate({"name": "a", "function": FUNC, "retry_on": ["TimeoutError"]})
    got = _failed(a, {"ok": False, "error": "ValueError: x", "type": "ValueError",
                      "mro": ["ValueError", "Exception", "BaseException"]})  # fmt: skip
    assert (got.ok, got.error, got.no_retry) == (
        False, "ValueError: x", "ValueError is not in retry_on; not retried"
    )  # fmt: skip
    # no exception type (an output too large, a missing function): retries decide
    assert _failed(a, {"ok": False, "error": "too big", "kind": "output"}).no_retry is None
    c = ContainerStep.model_validate({"name": "c", "image": "x", "retry_on_exit_codes": [75]})
    cap = OutputCapture("n0nce", lambda s, line: None, lambda s: s)
    kind = step_kind("container")
    assert kind.read_result(c, 75, cap, None).no_retry is None
    assert kind.read_result(c, 1, cap, None).no_retry is not None
    # killed or lost is no exit of the container's own
    assert kind.read_result(c, EXIT_KILLED, cap, "killed").no_retry is None
    assert kind.read_result(c, EXIT_LOST, cap, "gone").no_retry is None

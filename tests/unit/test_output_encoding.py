"""The output limit's pieces (issue 12, item 12): measuring while encoding,
the message, the worker's capture dropping an over-long result line, and the
setting's name in the runtime's message."""

from __future__ import annotations

import json

import pytest

from ferryman.domain.spec import FunctionRef, PythonStep
from ferryman.infra.base import OutputCapture, StepLaunch
from ferryman.infra.step_kinds import SAME_OUTPUT, step_kind
from ferryman.runtime.loader import (
    MAX_OUTPUT_SETTING,
    OutputTooLarge,
    encode_success,
    human_bytes,
    output_too_large,
    run_step,
)
from ferryman.settings import WorkerSettings

PY = PythonStep(name="s", function=FunctionRef(module="m", qualname="f"))


def test_sizes_read_as_people_write_them() -> None:
    assert [human_bytes(n) for n in (20, 1024, 1536, 1 << 20, 100_000_000, 3 << 30)] == [
        "20 bytes", "1 KiB", "1.5 KiB", "1 MiB", "95.4 MiB", "3 GiB",
    ]  # fmt: skip
    assert output_too_large(100 * (1 << 20), 1 << 20) == (
        "output is 100 MiB, over the 1 MiB limit (FERRYMAN_MAX_OUTPUT_BYTES): write large "
        "data to storage and return a reference"
    )


def test_the_setting_named_is_the_real_one() -> None:
    assert "FERRYMAN_" + "max_output_bytes".upper() == MAX_OUTPUT_SETTING
    assert "max_output_bytes" in WorkerSettings.model_fields
    assert WorkerSettings().max_output_bytes == 1024 * 1024


@pytest.mark.parametrize(
    "value", [None, 1, "é", [1, 2.5, {"a": [True, None]}], {"x": "y" * 1000}, float("nan")]
)
def test_encoding_under_the_limit_is_json_dumps(value: object) -> None:
    assert encode_success(value, 1 << 20) == json.dumps({"ok": True, "value": value})
    assert encode_success(value) == json.dumps({"ok": True, "value": value})


def test_over_the_limit_the_size_is_exact() -> None:
    value = {"rows": [{"id": i, "name": "n" * 50} for i in range(10_000)]}
    with pytest.raises(OutputTooLarge) as info:
        encode_success(value, 1000)
    assert info.value.size == len(json.dumps(value))
    assert encode_success("x" * 998, 1000).endswith('"}')  # 1000 bytes of JSON: at the limit
    with pytest.raises(OutputTooLarge):
        encode_success("x" * 999, 1000)


def test_run_step_fails_an_output_over_the_limit() -> None:
    outcome, code = run_step(
        {"module": "json", "qualname": "dumps"}, {"obj": "x" * 5000}, [], print, 4096
    )
    assert code == 1
    assert json.loads(outcome) == {
        "ok": False,
        "kind": "output",
        "size": len(json.dumps(json.dumps("x" * 5000))),  # 5006: the JSON of the value
        "error": output_too_large(5006, 4096),
    }
    ok, code = run_step({"module": "json", "qualname": "dumps"}, {"obj": 1}, [], print, 4096)
    assert (code, json.loads(ok)) == (0, {"ok": True, "value": "1"})


def test_the_worker_drops_an_over_long_result_line() -> None:
    # a runtime that does not check the limit (an older image, say)
    lines: list[str] = []
    cap = OutputCapture("n0nce", lambda s, line: lines.append(line), lambda s: s, 4096)
    cap("stdout", "\x1eferryman-result n0nce " + json.dumps({"ok": True, "value": "x" * 10_000}))
    assert (cap.has_result, cap.result_json, cap.result_too_large) == (True, None, 10_002)
    assert lines == []
    got = step_kind("python").read_result(PY, 0, cap, None)
    assert (got.ok, got.has_output, got.no_retry) == (False, False, SAME_OUTPUT)
    assert got.error == output_too_large(10_002, 4096)
    small = OutputCapture("n0nce", lambda s, line: None, lambda s: s, 4096)
    small("stdout", "\x1eferryman-result n0nce " + json.dumps({"ok": True, "value": "x" * 4000}))
    assert step_kind("python").read_result(PY, 0, small, None).output == "x" * 4000


def test_the_limit_travels_in_the_payload_only_when_set() -> None:
    launch = StepLaunch("r", "s", 1, "p", "default", PY, {}, {}, "n0nce")
    assert "max_output_bytes" not in launch.payload()
    launch.max_output_bytes = 4096
    assert launch.payload()["max_output_bytes"] == 4096

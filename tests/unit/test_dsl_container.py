"""Container steps in the Python DSL."""

from __future__ import annotations

import pytest

from ferryman import container, pipeline, step
from ferryman.dsl.decorators import DSLError


@step
def rows(day: str) -> int:
    return len(day)


def test_container_step_compiles_with_placeholders_and_dependencies() -> None:
    @pipeline
    def etl(day: str = "2024-05-01") -> None:
        n = rows(day)
        done = container(
            "report",
            "busybox:1.36",
            command=["sh", "-c"],
            args=["echo {{ params.day }} has", n, "rows; day", day],
            env={"MODE": "fast"},
            infrastructure="docker",
            retries=2,
        )
        container("cleanup", "busybox:1.36", command=["true"], wait_for=done)

    spec = etl.spec()
    report = spec.step("report")
    assert report.kind == "container" and report.image == "busybox:1.36"
    assert report.command == ["sh", "-c"]
    assert report.args == [
        "echo {{ params.day }} has",
        "{{ inputs.rows }}",
        "rows; day",
        "{{ params.day }}",
    ]
    assert report.inputs == {"rows": {"$step": "rows"}}
    assert report.depends_on == ["rows"]
    assert (report.env, report.infrastructure, report.retries) == ({"MODE": "fast"}, "docker", 2)
    assert spec.step("cleanup").depends_on == ["report"]
    assert spec.step("cleanup").args is None


def test_container_needs_a_pipeline_and_known_options() -> None:
    with pytest.raises(DSLError, match="inside a @pipeline"):
        container("x", "busybox")

    @pipeline
    def bad() -> None:
        container("x", "busybox", colour="red")

    with pytest.raises(DSLError, match="unknown step option"):
        bad.spec()

    @pipeline
    def bad_arg() -> None:
        container("x", "busybox", args=[{"not": "text"}])

    with pytest.raises(DSLError, match="command and args take text"):
        bad_arg.spec()

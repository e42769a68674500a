"""Container command and env rendering shared by docker and kubernetes."""

from __future__ import annotations

import pytest

from ferryman.domain.spec import ContainerStep, FunctionRef, PythonStep, StepSpec
from ferryman.infra.base import PAYLOAD_ENV, StepLaunch
from ferryman.infra.container import TemplateError, container_command, container_env, render


def _launch(step: StepSpec, **kw: object) -> StepLaunch:
    base: dict[str, object] = dict(
        run_id="r1",
        node=step.name,
        attempt=2,
        pipeline="p",
        namespace="default",
        step=step,
        inputs={"n": 3, "rows": [1, 2]},
        params={"lang": "en", "flag": True},
        nonce="x",
    )
    base.update(kw)
    return StepLaunch(**base)  # type: ignore[arg-type]


def test_render_fills_params_inputs_and_scalars() -> None:
    step = ContainerStep(name="s", image="busybox")
    launch = _launch(step)
    assert render("{{ params.lang }}-{{inputs.n}}", launch) == "en-3"
    assert render("{{ inputs.rows }} {{ params.flag }}", launch) == "[1,2] true"
    assert render("{{ run_id }}/{{ step }}#{{ attempt }}", launch) == "r1/s#2"
    assert render("no placeholders {x}", launch) == "no placeholders {x}"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("{{ params.nope }}", "params: flag, lang"), ("{{ secrets.x }}", "use params.NAME")],
)
def test_unknown_placeholder_names_it(text: str, fragment: str) -> None:
    launch = _launch(ContainerStep(name="s", image="busybox"))
    with pytest.raises(TemplateError) as exc:
        render(text, launch)
    assert fragment in str(exc.value)


def test_container_step_command_and_args_rendered() -> None:
    step = ContainerStep(name="s", image="b", command=["sh", "-c"], args=["echo {{ params.lang }}"])
    assert container_command(_launch(step)) == (["sh", "-c"], ["echo en"])
    bare = ContainerStep(name="s", image="b")
    assert container_command(_launch(bare)) == (None, None)


def test_python_step_runs_the_runtime() -> None:
    step = PythonStep(name="s", function=FunctionRef(module="m", qualname="f"))
    assert container_command(_launch(step), python="python3") == (
        ["python3", "-m", "ferryman.runtime"],
        None,
    )
    env = container_env(_launch(step))
    assert PAYLOAD_ENV in env


def test_env_merge_layers_and_none_unsets() -> None:
    step = ContainerStep(name="s", image="b")
    launch = _launch(
        step,
        env={"GREETING": "hi {{ params.lang }}", "DROP": None},
        secrets={"TOKEN": "s3cret"},
    )
    env = container_env(launch, base={"DROP": "x", "KEEP": "1", "FERRYMAN_STEP": "ignored"})
    assert env["GREETING"] == "hi en"
    assert "DROP" not in env
    assert env["KEEP"] == "1"
    assert env["TOKEN"] == "s3cret"
    assert env["FERRYMAN_STEP"] == "s" and env["FERRYMAN_RUN_ID"] == "r1"
    assert PAYLOAD_ENV not in env
    assert "PATH" not in env  # the worker's environment is not copied


def test_infra_config_is_checked_at_start() -> None:
    from ferryman.infra.registry import InfraPool

    InfraPool({"process": {}}).validate()
    with pytest.raises(ValueError, match="teleport"):
        InfraPool({"teleport": {}}).validate()
    with pytest.raises(ValueError, match=r"(?s)\[.docker.\].*bogus"):
        InfraPool({"docker": {"bogus": 1}}).validate()

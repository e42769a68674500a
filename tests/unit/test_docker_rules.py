"""Table tests of the docker infrastructure's pure rules (no daemon needed)."""

from __future__ import annotations

from typing import Any

import pytest

from ferryman.domain.spec import ContainerStep, FunctionRef, PythonStep, StepSpec
from ferryman.infra.base import MASK, PAYLOAD_ENV, StepLaunch
from ferryman.infra.docker import DockerConfig, DockerConfigError, DockerInfrastructure
from ferryman.infra.docker.names import (
    NAME_RE,
    Volume,
    container_name,
    cpu_count,
    docker_labels,
    label_key,
    memory_bytes,
    numbered_name,
    parse_volume,
    parse_volumes,
    pull_policy,
    slugify_name,
    split_image,
)
from ferryman.infra.registry import InfraPool


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("etl-load", "etl-load"),
        ("My Pipeline/step 1", "My-Pipeline-step-1"),
        ("café_au.lait", "cafe_au.lait"),
        ("--._leading", "leading"),
        ("a  b\tc", "a-b-c"),
        ("ünïcödé!!!", "unicode"),
        ("日本語", "ferryman"),
        ("", "ferryman"),
        ("x" * 100, "x" * 63),
        ("trailing---", "trailing"),
    ],
)
def test_slugify_name(text: str, expected: str) -> None:
    slug = slugify_name(text)
    assert slug == expected
    assert NAME_RE.match(slug)


def test_container_name_keeps_run_and_attempt() -> None:
    name = container_name("p" * 80, "step", "0123456789abcdef", 3)
    assert name.endswith("-01234567-3")
    assert len(name) <= 63 and NAME_RE.match(name)
    assert container_name("etl", "load", "abcdef0123", 1) == "etl-load-abcdef01-1"


@pytest.mark.parametrize(("n", "expected"), [(0, "x"), (1, "x-2"), (2, "x-3"), (9, "x-10")])
def test_numbered_name(n: int, expected: str) -> None:
    assert numbered_name("x", n) == expected


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("team", "team"),
        ("example.com/team", "com.example.team"),
        ("app.kubernetes.io/name", "io.kubernetes.app.name"),
        ("Cost Center", "cost-center"),
        ("a..b--c", "a.b-c"),
        ("-x-", "x"),
        ("com.example.env", "com.example.env"),
    ],
)
def test_label_key(key: str, expected: str) -> None:
    assert label_key(key) == expected


def test_label_key_without_letters_is_an_error() -> None:
    with pytest.raises(ValueError, match="letter or digit"):
        label_key("../")


def test_ferryman_labels_win_and_are_prefixed() -> None:
    labels = docker_labels(
        {"example.com/team": "data", "io.ferryman.step": "fake"}, {"step": "load", "attempt": "2"}
    )
    assert labels == {
        "com.example.team": "data",
        "io.ferryman.step": "load",
        "io.ferryman.attempt": "2",
    }


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("/data:/in", Volume("/data", "/in", "rw")),
        ("/data:/in:ro", Volume("/data", "/in", "ro")),
        ("cache:/root/.cache:rw", Volume("cache", "/root/.cache", "rw")),
    ],
)
def test_parse_volume_ok(spec: str, expected: Volume) -> None:
    assert parse_volume(spec) == expected


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("/data", "expected 'src:dst'"),
        ("/a:/b:ro:x", "expected 'src:dst'"),
        ("relative/path:/in", "neither an absolute host path nor a volume name"),
        (":/in", "the source is empty"),
        ("/data:in", "must be an absolute path in the container"),
        ("/data:/in:rx", "the mode 'rx' must be 'ro' or 'rw'"),
    ],
)
def test_parse_volume_errors(spec: str, fragment: str) -> None:
    with pytest.raises(ValueError) as exc:
        parse_volume(spec)
    assert fragment in str(exc.value)
    assert spec in str(exc.value)


def test_parse_volumes_lists_every_problem() -> None:
    with pytest.raises(ValueError) as exc:
        parse_volumes(["/a:/x", "bad", "/b:/x", "/c:/y:zz"])
    msg = str(exc.value)
    assert "'bad'" in msg and "'zz'" in msg and "'/x' is mounted twice" in msg


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("busybox", ("busybox", None, None)),
        ("busybox:1.36", ("busybox", "1.36", None)),
        ("localhost:5000/app", ("localhost:5000/app", None, None)),
        ("localhost:5000/app:v2", ("localhost:5000/app", "v2", None)),
        ("app@sha256:abc", ("app", None, "sha256:abc")),
        ("app:v1@sha256:abc", ("app", "v1", "sha256:abc")),
    ],
)
def test_split_image(image: str, expected: tuple[str, str | None, str | None]) -> None:
    assert split_image(image) == expected


@pytest.mark.parametrize(
    ("image", "configured", "expected"),
    [
        ("busybox", None, "always"),
        ("busybox:latest", None, "always"),
        ("busybox:1.36", None, "if_not_present"),
        ("localhost:5000/app", None, "always"),
        ("localhost:5000/app:v2", None, "if_not_present"),
        ("app@sha256:abc", None, "if_not_present"),
        ("busybox", "never", "never"),
        ("busybox:1.36", "always", "always"),
        ("busybox:latest", "if_not_present", "if_not_present"),
    ],
)
def test_pull_policy(image: str, configured: Any, expected: str) -> None:
    assert pull_policy(image, configured) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1024, 1024),
        ("512Mi", 512 * 1024**2),
        ("1Gi", 1024**3),
        ("1G", 1000**3),
        ("256m", 256 * 1024**2),
        ("2g", 2 * 1024**3),
        ("100", 100),
        ("1.5Gi", int(1.5 * 1024**3)),
    ],
)
def test_memory_bytes(value: Any, expected: int) -> None:
    assert memory_bytes(value) == expected


@pytest.mark.parametrize("value", ["lots", "1Zi", "-1", 0, "0"])
def test_memory_bytes_errors(value: Any) -> None:
    with pytest.raises(ValueError, match="memory"):
        memory_bytes(value)


@pytest.mark.parametrize(("value", "expected"), [("500m", 0.5), ("2", 2.0), (1.5, 1.5)])
def test_cpu_count(value: Any, expected: float) -> None:
    assert cpu_count(value) == expected


@pytest.mark.parametrize("value", ["fast", "0", "-1"])
def test_cpu_count_errors(value: Any) -> None:
    with pytest.raises(ValueError, match="cpu"):
        cpu_count(value)


# -- the config model and the plan (still no daemon) ------------------------------


def test_config_lists_every_problem() -> None:
    with pytest.raises(ValueError) as exc:
        DockerConfig.model_validate(
            {"pull_policy": "sometimes", "volumes": ["nope"], "bogus": 1, "mem_limit": "x"}
        )
    msg = str(exc.value)
    for fragment in ("pull_policy", "volumes", "bogus", "mem_limit"):
        assert fragment in msg


def test_registry_needs_exactly_one_password_source() -> None:
    for registry in ({"username": "u"}, {"username": "u", "password": "p", "password_env": "E"}):
        with pytest.raises(ValueError, match="exactly one of password and password_env"):
            DockerConfig.model_validate({"registry": registry})
    cfg = DockerConfig.model_validate({"registry": {"username": "u", "password_env": "REG_PW"}})
    assert cfg.registry is not None and cfg.registry.password is None


def test_overrides_keep_the_configured_registry_password() -> None:
    step = ContainerStep(name="s", image="busybox")
    infra = DockerInfrastructure(
        DockerConfig.model_validate({"registry": {"username": "u", "password": "pw"}})
    )
    plan = infra.plan(_launch(step, overrides={"network_mode": "none"}))
    assert plan.config.registry is not None and plan.config.registry.secret() == "pw"


def test_network_mode_and_networks_exclude_each_other() -> None:
    with pytest.raises(ValueError, match="either network_mode or networks"):
        DockerConfig(network_mode="host", networks=["n1"])


def test_pool_builds_docker_from_infra_config() -> None:
    pool = InfraPool({"docker": {"pull_policy": "never", "network_mode": "none"}})
    infra = pool.get("docker")
    assert isinstance(infra, DockerInfrastructure)
    assert infra.config.pull_policy == "never"
    pool.close()  # no client was created: nothing touched the daemon


def _launch(step: StepSpec, **kw: Any) -> StepLaunch:
    base: dict[str, Any] = dict(
        run_id="0123456789abcdef",
        node=step.name,
        attempt=1,
        pipeline="etl",
        namespace="default",
        step=step,
        inputs={"n": 3},
        params={"who": "world"},
        nonce="nonce",
    )
    base.update(kw)
    return StepLaunch(**base)


def test_plan_and_preview_mask_secrets() -> None:
    step = ContainerStep(
        name="greet",
        image="busybox:1",
        command=["sh", "-c"],
        args=["echo hello {{ params.who }} {{ inputs.n }}"],
        resources={"cpu": "500m", "memory": "64Mi"},
    )
    infra = DockerInfrastructure(
        DockerConfig(
            env={"BASE": "1", "DROP": "x"},
            labels={"example.com/team": "data"},
            volumes=["/tmp:/host-tmp:ro"],
            network_mode="none",
            registry={"username": "bot", "password": "hunter2"},  # type: ignore[arg-type]
        )
    )
    launch = _launch(
        step,
        env={"DROP": None, "TOKEN_COPY": "tok-SECRET"},
        secrets={"TOKEN": "SECRET"},
        labels={"owner": "ann"},
    )
    plan = infra.plan(launch)
    assert plan.entrypoint == ["sh", "-c"] and plan.command == ["echo hello world 3"]
    assert plan.environment["BASE"] == "1" and "DROP" not in plan.environment
    assert plan.environment["TOKEN"] == "SECRET"
    assert plan.labels["com.example.team"] == "data" and plan.labels["owner"] == "ann"
    assert plan.labels["io.ferryman.run-id"] == "0123456789abcdef"
    assert plan.volumes == {"/tmp": {"bind": "/host-tmp", "mode": "ro"}}
    assert plan.mem_limit == 64 * 1024**2 and plan.nano_cpus == 500_000_000
    assert plan.pull_policy == "if_not_present" and plan.name == "etl-greet-01234567-1"
    shown = infra.preview(launch)
    text = repr(shown)
    assert "SECRET" not in text and "hunter2" not in text
    assert shown["env"]["TOKEN"] == MASK and shown["env"]["TOKEN_COPY"] == f"tok-{MASK}"
    assert shown["registry"]["password"] == MASK
    assert shown["network_mode"] == "none"


def test_overrides_merge_and_are_validated() -> None:
    step = ContainerStep(name="s", image="busybox")
    infra = DockerInfrastructure(DockerConfig(env={"A": "1"}, network_mode="none"))
    plan = infra.plan(_launch(step, overrides={"env": {"B": "2"}, "pull_policy": "never"}))
    assert plan.environment["A"] == "1" and plan.environment["B"] == "2"
    assert plan.pull_policy == "never" and plan.network_mode == "none"
    with pytest.raises(DockerConfigError) as exc:
        infra.plan(_launch(step, overrides={"volumes": ["x"], "colour": "red"}))
    msg = str(exc.value)
    assert "overrides of step 's'" in msg and "volumes" in msg and "colour" in msg


def test_python_step_needs_an_image_and_runs_the_runtime() -> None:
    step = PythonStep(name="py", function=FunctionRef(module="m", qualname="f"))
    infra = DockerInfrastructure(DockerConfig(python="/usr/bin/python3"))
    with pytest.raises(DockerConfigError, match="needs an image with ferryman"):
        infra.plan(_launch(step))
    plan = infra.plan(_launch(step, overrides={"image": "me/app:1"}))
    assert plan.image == "me/app:1"
    assert plan.entrypoint == ["/usr/bin/python3", "-m", "ferryman.runtime"]
    assert PAYLOAD_ENV in plan.environment


def test_bad_resources_are_a_clear_error() -> None:
    step = ContainerStep(name="s", image="busybox", resources={"memory": "lots"})
    with pytest.raises(DockerConfigError, match="step 's' resources: memory 'lots'"):
        DockerInfrastructure().plan(_launch(step))


# -- the YAML loader's ${...} placeholders in container commands -----------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("from ${params.who}", "from world"),
        ("${steps.load} rows", '{"n":3,"tags":["a"]} rows'),
        ("${steps.load.n} rows", "3 rows"),
        ("$${params.who} ${HOME}", "${params.who} ${HOME}"),
        ("{{ params.who }}/${ params.who }", "world/world"),
    ],
)
def test_dollar_placeholders_render(template: str, expected: str) -> None:
    from ferryman.infra.container import render

    step = ContainerStep(name="s", image="b")
    launch = _launch(step, inputs={"load": {"n": 3, "tags": ["a"]}})
    assert render(template, launch) == expected


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        ("${params.nope}", "params: who"),
        ("${steps.extract}", "the output of step 'extract' is not an input of this step"),
        ("${steps.load.zz}", "has no field 'zz'"),
    ],
)
def test_dollar_placeholder_errors_say_what_is_wrong(template: str, fragment: str) -> None:
    from ferryman.infra.container import TemplateError, render

    step = ContainerStep(name="s", image="b")
    with pytest.raises(TemplateError) as exc:
        render(template, _launch(step, inputs={"load": {"n": 3}}))
    assert fragment in str(exc.value)


def test_inserted_values_are_not_rendered_again() -> None:
    from ferryman.infra.container import render

    step = ContainerStep(name="s", image="b")
    launch = _launch(step, params={"who": "${params.who} {{ step }}"})
    assert render("{{ params.who }}", launch) == "${params.who} {{ step }}"

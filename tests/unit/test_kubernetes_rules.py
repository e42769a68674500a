"""Pure rules of the kubernetes infrastructure: names, labels, manifests, config.

Every Job manifest built here is checked against the real Kubernetes schemas
with ``kubernetes-validate --strict`` (it ships the schemas: no network).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from ferryman.domain.spec import ContainerStep, FunctionRef, PythonStep, StepSpec
from ferryman.infra.base import MASK, StepLaunch
from ferryman.infra.kubernetes import KubernetesConfig, KubernetesInfrastructure, parse_identifier
from ferryman.infra.kubernetes.manifest import (
    REQUIRED_PATHS,
    ManifestError,
    apply_customizations,
    check_base_manifest,
    merge_resources,
    missing_paths,
    parse_patch,
)
from ferryman.infra.kubernetes.names import (
    is_dns_label,
    is_label_key,
    is_label_value,
    job_name_prefix,
    label_key,
    label_value,
)
from ferryman.infra.registry import InfraPool

K8S_VERSION = kubernetes_validate.latest_version()


def strict(manifest: dict[str, Any]) -> None:
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


# -- names and labels -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pipeline", "step", "expected"),
    [
        ("etl", "load", "etl-load-"),
        ("My Pipeline", "Étape_1", "my-pipeline-etape-1-"),
        ("---", "___", "ferryman-"),
        ("123", "x", "123-x-"),
        ("a" * 50, "b" * 50, "a" * 44 + "-"),
        ("a" * 43, "b", "a" * 43 + "-"),  # cut at 44, then no dangling dash
        ("a" * 42, "--b", "a" * 42 + "-b-"),
        ("data.v2", "step.x", "data-v2-step-x-"),
    ],
)
def test_job_name_prefix(pipeline: str, step: str, expected: str) -> None:
    prefix = job_name_prefix(pipeline, step)
    assert prefix == expected
    assert len(prefix) <= 45 and prefix.endswith("-")
    # what the API server makes of it (+ 5 random characters) is a DNS-1123 label
    assert is_dns_label(prefix + "x7k2p")


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("team", "team"),
        ("Team Name", "Team-Name"),
        ("example.com/owner", "example.com/owner"),
        ("Example.COM/some key!", "example.com/some-key"),
        ("app.kubernetes.io/name", "app.kubernetes.io/name"),
        ("a/b/c", "a/b-c"),
        ("-_.abc._-", "abc"),
        ("ünïcode/kéy", "unicode/key"),
        ("..bad..prefix../name", "bad.prefix/name"),
        ("x" * 70, "x" * 63),
        ("!!!/name", "name"),
    ],
)
def test_label_keys(key: str, expected: str) -> None:
    assert label_key(key) == expected
    assert is_label_key(expected)


@pytest.mark.parametrize("key", ["!!!", "prefix/", "", "example.com/__"])
def test_label_key_without_a_name_is_an_error(key: str) -> None:
    with pytest.raises(ValueError, match="no letters or digits"):
        label_key(key)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", ""),
        ("Data Eng", "Data-Eng"),
        ("v1.2_3", "v1.2_3"),
        ("-abc-", "abc"),
        ("héllo", "hello"),
        (12, "12"),
        ("a/b:c", "a-b-c"),
        ("___", ""),
        ("x" * 70, "x" * 63),
        ("x" * 62 + "-y", "x" * 62),
    ],
)
def test_label_values(value: object, expected: str) -> None:
    assert label_value(value) == expected
    assert is_label_value(expected)


@pytest.mark.parametrize(
    ("key", "valid"),
    [
        ("name", True),
        ("example.com/name", True),
        ("Example.com/name", False),
        ("-name", False),
        ("name-", False),
        ("a" * 64, False),
        ("a" * 63, True),
        ("a.b/c/d", False),
        ("/name", False),
        ("under_score.dot-dash", True),
    ],
)
def test_label_key_checker(key: str, valid: bool) -> None:
    assert is_label_key(key) is valid


@given(st.text(max_size=120))
def test_any_text_becomes_a_valid_label(text: str) -> None:
    assert is_label_value(label_value(text))
    try:
        key = label_key(text)
    except ValueError:
        return
    assert is_label_key(key)


@given(st.text(max_size=80), st.text(max_size=80))
def test_any_names_make_a_valid_job_prefix(pipeline: str, step: str) -> None:
    prefix = job_name_prefix(pipeline, step)
    assert len(prefix) <= 45 and is_dns_label(prefix + "abcde")


# -- base manifests and patches ---------------------------------------------------------

FULL = {
    "apiVersion": "batch/v1",
    "kind": "Job",
    "metadata": {},
    "spec": {"template": {"spec": {"containers": [{"name": "main"}]}}},
}


@pytest.mark.parametrize(
    ("manifest", "missing"),
    [
        (FULL, []),
        ({}, list(REQUIRED_PATHS)),
        (
            {"apiVersion": "batch/v1", "kind": "Job", "metadata": {}},
            ["/spec", "/spec/template", "/spec/template/spec", "/spec/template/spec/containers"],
        ),
        (
            {"apiVersion": "batch/v1", "kind": "Job", "spec": {"template": {"spec": {}}}},
            ["/metadata", "/spec/template/spec/containers"],
        ),
        ({**FULL, "kind": None} | {"kind": "Job"}, []),
        ({k: v for k, v in FULL.items() if k != "apiVersion"}, ["/apiVersion"]),
    ],
)
def test_required_paths(manifest: dict[str, Any], missing: list[str]) -> None:
    assert missing_paths(manifest) == missing


def test_a_bad_base_manifest_lists_every_problem() -> None:
    with pytest.raises(ManifestError) as exc:
        check_base_manifest({"kind": "Pod", "spec": {"template": {}}})
    text = str(exc.value)
    for part in (
        "missing /apiVersion",
        "missing /metadata",
        "missing /spec/template/spec",
        "missing /spec/template/spec/containers",
        "kind must be Job, not 'Pod'",
    ):
        assert part in text
    with pytest.raises(ManifestError, match="non-empty list of containers"):
        check_base_manifest({**FULL, "spec": {"template": {"spec": {"containers": []}}}})


def test_a_bad_base_manifest_in_the_config_is_a_clear_error() -> None:
    with pytest.raises(ValidationError) as exc:
        KubernetesConfig(job_manifest={"apiVersion": "batch/v1", "kind": "Job"})
    text = str(exc.value)
    assert "missing /metadata" in text and "missing /spec/template/spec/containers" in text


@pytest.mark.parametrize(
    ("ops", "fragments"),
    [
        ({"op": "add"}, ["must be a list"]),
        (
            [{"op": "frobnicate", "path": "/x"}, {"op": "add", "path": "/y"}, {"path": 3}],
            ["#0: op must be", "#1: add needs a 'value'", "#2: needs a string 'path'"],
        ),
        ([{"op": "copy", "path": "/a"}], ["#0: copy needs a string 'from'"]),
        (["not an op"], ["#0: not an object"]),
    ],
)
def test_malformed_patches_are_rejected_with_every_problem(ops: Any, fragments: list[str]) -> None:
    with pytest.raises(ManifestError) as exc:
        parse_patch(ops)
    for f in fragments:
        assert f in str(exc.value)


def test_a_patch_that_does_not_apply_names_the_operation() -> None:
    patch = parse_patch(
        [
            {"op": "add", "path": "/metadata/annotations", "value": {"a": "b"}},
            {"op": "replace", "path": "/spec/nope/deeper", "value": 1},
        ]
    )
    with pytest.raises(ManifestError, match=r"customization #1 \(replace /spec/nope/deeper\)"):
        apply_customizations(FULL, patch)


@pytest.mark.parametrize(
    ("layers", "expected"),
    [
        ([{"cpu": "1", "memory": "1Gi"}], {"requests": {"cpu": "1", "memory": "1Gi"},
                                           "limits": {"cpu": "1", "memory": "1Gi"}}),
        ([{"requests": {"cpu": "250m"}}, {"limits": {"memory": "2Gi"}}],
         {"requests": {"cpu": "250m"}, "limits": {"memory": "2Gi"}}),
        ([{"requests": {"cpu": "1"}}, {"cpu": 2}],
         {"requests": {"cpu": "2"}, "limits": {"cpu": "2"}}),
        ([{}], {}),
    ],
)  # fmt: skip
def test_resources_merge(layers: list[dict[str, Any]], expected: dict[str, Any]) -> None:
    assert merge_resources(*layers) == expected


def test_bad_resources_are_rejected() -> None:
    with pytest.raises(ValidationError, match="must be a mapping"):
        KubernetesConfig(resources={"requests": "1"})
    with pytest.raises(ManifestError, match="must be a quantity"):
        merge_resources({"cpu": {"x": 1}})


# -- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "ok"),
    [("Always", True), ("IfNotPresent", True), ("Never", True), (None, True),
     ("always", False), ("Sometimes", False), ("", False)],
)  # fmt: skip
def test_image_pull_policy(policy: str | None, ok: bool) -> None:
    if ok:
        assert KubernetesConfig(image_pull_policy=policy).image_pull_policy == policy
        return
    with pytest.raises(ValidationError) as exc:
        KubernetesConfig(image_pull_policy=policy)
    assert "'Always', 'IfNotPresent' or 'Never'" in str(exc.value)


@pytest.mark.parametrize(
    ("cfg", "fragment"),
    [
        ({"namespace": "Bad_NS"}, "not a valid Kubernetes namespace"),
        ({"nmespace": "x"}, "Extra inputs are not permitted"),
        ({"api_server": "https://k:6443", "in_cluster": True}, "exclude each other"),
        ({"token": "abc"}, "token and ca_cert need api_server"),
        ({"in_cluster": True, "context": "c"}, "in_cluster excludes kubeconfig"),
        ({"pod_watch_timeout_seconds": 0}, "greater than 0"),
        ({"customizations": [{"op": "nope"}]}, "op must be"),
        ({"customizations": "/no/such/file.yaml"}, "cannot read customizations file"),
    ],
)
def test_config_errors_are_clear(cfg: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError) as exc:
        KubernetesConfig.model_validate(cfg)
    assert fragment in str(exc.value)


def test_token_is_never_shown() -> None:
    cfg = KubernetesConfig(api_server="https://k:6443", token="sup3r-s3cret")
    assert "sup3r-s3cret" not in repr(cfg)
    assert "sup3r-s3cret" not in str(cfg.model_dump())
    assert "sup3r-s3cret" not in cfg.model_dump_json()


def test_the_registry_knows_kubernetes() -> None:
    pool = InfraPool({"kubernetes": {"namespace": "jobs", "image": "team/runtime:1"}})
    infra = pool.get("kubernetes")
    assert isinstance(infra, KubernetesInfrastructure)
    assert infra.config.namespace == "jobs"
    pool.close()


@pytest.mark.parametrize(
    ("ident", "ok"),
    [("ns/job-1", True), ("ns/", False), ("/job", False), ("NS/job", False), ("a/b/c", False)],
)
def test_identifiers(ident: str, ok: bool) -> None:
    if ok:
        assert parse_identifier(ident) == tuple(ident.split("/"))
    else:
        with pytest.raises(ValueError):
            parse_identifier(ident)


# -- whole manifests (validated against the real schemas) ----------------------------------


def _launch(step: StepSpec, **kw: Any) -> StepLaunch:
    base: dict[str, Any] = dict(
        run_id="0193a6b2-run",
        node=step.name,
        attempt=2,
        pipeline="Nightly ETL",
        namespace="team-a",
        step=step,
        inputs={"n": 3},
        params={"lang": "en"},
        nonce="abc",
    )
    base.update(kw)
    return StepLaunch(**base)


CONTAINER = ContainerStep(
    name="extract",
    image="busybox:1.36",
    command=["sh", "-c"],
    args=["echo {{ params.lang }} {{ inputs.n }}"],
)
PYTHON = PythonStep(name="train", function=FunctionRef(module="pipes", qualname="train"))


def _infra(**cfg: Any) -> KubernetesInfrastructure:
    return KubernetesInfrastructure(KubernetesConfig(**cfg))


def _container(job: dict[str, Any]) -> dict[str, Any]:
    c: dict[str, Any] = job["spec"]["template"]["spec"]["containers"][0]
    return c


def test_plain_manifest() -> None:
    job = _infra().manifest(_launch(CONTAINER))
    strict(job)
    assert job["metadata"]["generateName"] == "nightly-etl-extract-"
    assert job["metadata"]["namespace"] == "default"
    assert "name" not in job["metadata"]
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    c = _container(job)
    assert c["name"] == "ferryman" and c["image"] == "busybox:1.36"
    assert c["command"] == ["sh", "-c"] and c["args"] == ["echo en 3"]
    assert job["metadata"]["labels"] == {
        "ferryman.io/run-id": "0193a6b2-run",
        "ferryman.io/step": "extract",
        "ferryman.io/attempt": "2",
        "ferryman.io/pipeline": "Nightly-ETL",
        "ferryman.io/namespace": "team-a",
    }


def test_manifest_with_every_shortcut() -> None:
    infra = _infra(
        namespace="batch-jobs",
        image="registry.local/team/runtime:2024.1",
        python="python3",
        service_account_name="ferryman-runner",
        image_pull_policy="IfNotPresent",
        env={"LOG_LEVEL": "debug", "DROP_ME": "x", "SHARED": "from-config"},
        labels={"Cost Center": "R&D 42", "example.com/team": "ml"},
        resources={"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
        ttl_seconds_after_finished=600,
    )
    step = PYTHON.model_copy(
        update={"env": {"DROP_ME": None, "SHARED": "from-step"}, "resources": {"nvidia.com/gpu": 1}}
    )
    launch = _launch(step, env=dict(step.env), labels={"run label": "yes"})
    job = infra.manifest(launch)
    strict(job)
    c = _container(job)
    assert c["image"] == "registry.local/team/runtime:2024.1"
    assert c["command"] == ["python3", "-m", "ferryman.runtime"]
    assert c["imagePullPolicy"] == "IfNotPresent"
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["LOG_LEVEL"] == "debug" and env["SHARED"] == "from-step"
    assert "DROP_ME" not in env
    assert json.loads(env["FERRYMAN_STEP_PAYLOAD"])["inputs"] == {"n": 3}
    assert c["resources"] == {
        "requests": {"cpu": "500m", "memory": "1Gi", "nvidia.com/gpu": "1"},
        "limits": {"memory": "2Gi", "nvidia.com/gpu": "1"},
    }
    assert job["spec"]["ttlSecondsAfterFinished"] == 600
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "ferryman-runner"
    labels = job["metadata"]["labels"]
    assert labels["Cost-Center"] == "R-D-42" and labels["example.com/team"] == "ml"
    assert labels["run-label"] == "yes"
    assert job["spec"]["template"]["metadata"]["labels"] == labels


def test_manifest_with_customizations_inline_and_from_files(tmp_path: Path) -> None:
    ops = [
        {"op": "add", "path": "/spec/template/spec/nodeSelector", "value": {"pool": "gpu"}},
        {
            "op": "add",
            "path": "/spec/template/spec/containers/0/env/-",
            "value": {
                "name": "DB_PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}},
            },
        },
        {"op": "add", "path": "/spec/activeDeadlineSeconds", "value": 3600},
        {"op": "add", "path": "/metadata/annotations", "value": {"owner": "data"}},
    ]
    yaml_file = tmp_path / "patch.yaml"
    yaml_file.write_text(
        "- op: add\n  path: /spec/template/spec/nodeSelector\n  value: {pool: gpu}\n"
        "- op: add\n  path: /spec/activeDeadlineSeconds\n  value: 3600\n"
    )
    json_file = tmp_path / "patch.json"
    json_file.write_text(json.dumps(ops))
    for customizations in (ops, str(yaml_file), str(json_file)):
        job = _infra(customizations=customizations).manifest(_launch(CONTAINER))
        strict(job)
        assert job["spec"]["template"]["spec"]["nodeSelector"] == {"pool": "gpu"}
        assert job["spec"]["activeDeadlineSeconds"] == 3600
    env = _container(job)["env"]
    assert env[-1]["valueFrom"]["secretKeyRef"] == {"name": "db", "key": "password"}
    assert job["metadata"]["annotations"] == {"owner": "data"}


def test_customizations_that_break_the_job_are_refused(tmp_path: Path) -> None:
    infra = _infra(customizations=[{"op": "remove", "path": "/spec/template"}])
    with pytest.raises(ManifestError, match="removed required paths: /spec/template"):
        infra.manifest(_launch(CONTAINER))
    infra = _infra(customizations=[{"op": "replace", "path": "/kind", "value": "Pod"}])
    with pytest.raises(ManifestError, match="must keep apiVersion batch/v1, kind Job"):
        infra.manifest(_launch(CONTAINER))
    bad = tmp_path / "bad.yaml"
    bad.write_text("- op: add\n  path: [unclosed\n")
    with pytest.raises(ValidationError, match="not valid YAML/JSON"):
        KubernetesConfig(customizations=str(bad))


def test_manifest_from_a_user_base_manifest() -> None:
    base = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "fixed-name", "labels": {"app": "etl"}},
        "spec": {
            "activeDeadlineSeconds": 7200,
            "template": {
                "metadata": {"annotations": {"sidecar.istio.io/inject": "false"}},
                "spec": {
                    "containers": [
                        {
                            "name": "step",
                            "env": [{"name": "KEEP", "value": "1"}, {"name": "LANG", "value": "C"}],
                            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                        },
                        {"name": "sidecar", "image": "envoy:1"},
                    ],
                    "volumes": [{"name": "data", "emptyDir": {}}],
                },
            },
        },
    }
    infra = _infra(job_manifest=base, env={"LANG": "en_US.UTF-8"})
    job = infra.manifest(_launch(CONTAINER))
    strict(job)
    assert "name" not in job["metadata"]  # generateName instead: retries never collide
    assert job["metadata"]["labels"]["app"] == "etl"
    assert job["spec"]["activeDeadlineSeconds"] == 7200
    c = _container(job)
    assert c["name"] == "step" and c["volumeMounts"] == [{"name": "data", "mountPath": "/data"}]
    env = [(e["name"], e["value"]) for e in c["env"]]
    assert env[0] == ("KEEP", "1") and ("LANG", "en_US.UTF-8") in env
    assert [n for n, _ in env].count("LANG") == 1
    assert job["spec"]["template"]["spec"]["containers"][1] == {
        "name": "sidecar",
        "image": "envoy:1",
    }
    assert base["metadata"]["name"] == "fixed-name"  # the config is not mutated


def test_overrides_change_the_job_but_never_the_credentials() -> None:
    infra = _infra(namespace="a", image="rt:1")
    launch = _launch(PYTHON, overrides={"namespace": "b", "image": "rt:2", "labels": {"x": "y"}})
    job = infra.manifest(launch)
    strict(job)
    assert job["metadata"]["namespace"] == "b" and _container(job)["image"] == "rt:2"
    with pytest.raises(ValueError, match="may not change the kubernetes credentials"):
        infra.manifest(_launch(PYTHON, overrides={"api_server": "https://evil:6443"}))
    with pytest.raises(ValidationError, match="Extra inputs"):
        infra.manifest(_launch(PYTHON, overrides={"imagePullPolicy": "Always"}))


def test_python_step_needs_an_image() -> None:
    with pytest.raises(ManifestError, match="needs an image with ferryman installed"):
        _infra().manifest(_launch(PYTHON))


def test_preview_masks_secrets() -> None:
    step = CONTAINER.model_copy(
        update={"args": ["curl -H 'key: s3cr3t-value' {{ params.lang }}"], "secrets": ["KEY"]}
    )
    launch = _launch(step, secrets={"KEY": "s3cr3t-value"})
    preview = _infra().preview(launch)
    assert preview["kind"] == "Job" and preview["apiVersion"] == "batch/v1"
    text = json.dumps(preview)
    assert "s3cr3t-value" not in text
    c = _container(preview)
    assert {"name": "KEY", "value": MASK} in c["env"]
    assert c["args"] == [f"curl -H 'key: {MASK}' en"]
    strict(preview)
    # the real manifest (sent to the API) carries the value
    assert {"name": "KEY", "value": "s3cr3t-value"} in _container(_infra().manifest(launch))["env"]

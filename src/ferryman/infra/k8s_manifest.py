"""Pure rules of the kubernetes infrastructure: names, labels, Job manifests.

Nothing here talks to a cluster, so every rule is table-tested on its own:

- ``job_name_prefix``: the Job's ``generateName`` — a DNS-1123 label slug of
  at most 45 characters ending in ``-``; the API server appends 5 random
  characters, so two attempts never collide and the name (and the pods'
  ``job-name`` label) stays well under 63 characters.
- ``label_key`` / ``label_value``: any text made into a valid label key
  (optional DNS-subdomain prefix ≤ 253 + ``/`` + name ≤ 63) or value (≤ 63,
  possibly empty).
- ``check_base_manifest``: a user's base Job manifest must hold every path
  in ``REQUIRED_PATHS``; all missing paths are reported together.
- ``apply_customizations``: RFC 6902 JSON patches (``jsonpatch``).
- ``KubernetesConfig`` and ``build_job``: the configuration and the Job of
  one attempt built from it.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import jsonpatch
import jsonpointer
import yaml
from pydantic import Field, SecretStr, field_validator, model_validator
from slugify import slugify

from ferryman.infra.base import InfraConfig, StepLaunch
from ferryman.infra.container import container_command, container_env

#: Prefix of ferryman's own labels (``ferryman.io/run-id`` …).
LABEL_PREFIX = "ferryman.io/"
#: Longest ``generateName`` we send (the API server adds 5 characters).
MAX_PREFIX = 45
#: Name of the step's container when the base manifest does not name one.
DEFAULT_CONTAINER = "ferryman"

REQUIRED_PATHS: tuple[str, ...] = (
    "/apiVersion",
    "/kind",
    "/metadata",
    "/spec",
    "/spec/template",
    "/spec/template/spec",
    "/spec/template/spec/containers",
)

_LABEL_NAME = re.compile(r"^[a-zA-Z0-9]([-a-zA-Z0-9_.]*[a-zA-Z0-9])?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_NOT_LABEL_CHAR = r"[^-a-zA-Z0-9_.]+"
_TRIM = re.compile(r"^[^a-zA-Z0-9]+|[^a-zA-Z0-9]+$")


class ManifestError(ValueError):
    """A base manifest or customization that cannot make a valid Job."""


# -- names and labels ---------------------------------------------------------


def _trim(text: str, limit: int) -> str:
    """Cut to ``limit`` characters and strip non-alphanumerics from both ends."""
    return _TRIM.sub("", _TRIM.sub("", text)[:limit])


def _label_chars(text: str) -> str:
    """Transliterate to ASCII and turn every run of non-label characters into ``-``."""
    ascii_text = slugify(text, lowercase=False, regex_pattern=_NOT_LABEL_CHAR)
    return re.sub(_NOT_LABEL_CHAR, "-", ascii_text)


def _dns(text: str) -> str:
    """Lower-case ASCII letters, digits and single dashes."""
    return re.sub(r"[^a-z0-9]+", "-", _label_chars(text).lower())


def is_dns_label(text: str) -> bool:
    """Whether ``text`` is a valid DNS-1123 label (namespaces, Job names)."""
    return len(text) <= 63 and bool(_DNS_LABEL.match(text))


def job_name_prefix(pipeline: str, step: str) -> str:
    """``generateName`` for a step's Job: ``<pipeline>-<step>-`` as a DNS-1123
    slug of at most 45 characters (``ferryman-`` when nothing usable is left)."""
    slug = _dns(f"{pipeline}-{step}")
    slug = _trim(slug, MAX_PREFIX - 1)
    return (slug or "ferryman") + "-"


def label_value(value: object) -> str:
    """Any value as a label value: ≤ 63 of ``[-A-Za-z0-9_.]``, alphanumeric at
    both ends, or empty. Unicode is transliterated (``é`` → ``e``)."""
    return _trim(_label_chars(str(value)), 63)


def label_key(key: str) -> str:
    """Any text as a label key: ``[prefix/]name``.

    The prefix (before the first ``/``) becomes a lower-case DNS subdomain of
    at most 253 characters; the name follows the value rules but may not be
    empty (``ValueError`` then).
    """
    prefix, sep, name = key.partition("/")
    if not sep:
        prefix, name = "", key
    clean_name = _trim(_label_chars(name), 63)
    if not clean_name:
        raise ValueError(f"label key {key!r} has no letters or digits in its name")
    if not prefix:
        return clean_name
    parts = [_trim(_dns(p), 63) for p in prefix.split(".")]
    clean_prefix = ".".join(p for p in parts if p)[:253].strip(".-")
    return f"{clean_prefix}/{clean_name}" if clean_prefix else clean_name


def is_label_key(key: str) -> bool:
    """Whether ``key`` is a valid label key (used by the tests' tables)."""
    prefix, sep, name = key.rpartition("/")
    if sep and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return False
    return len(name) <= 63 and bool(_LABEL_NAME.match(name))


def is_label_value(value: str) -> bool:
    """Whether ``value`` is a valid label value."""
    return value == "" or (len(value) <= 63 and bool(_LABEL_NAME.match(value)))


def make_labels(*layers: Mapping[str, object]) -> dict[str, str]:
    """Merge label layers (later wins) with keys and values made valid."""
    out: dict[str, str] = {}
    for layer in layers:
        for k, v in layer.items():
            out[label_key(str(k))] = label_value(v)
    return out


# -- base manifests and patches -------------------------------------------------


def default_manifest() -> dict[str, Any]:
    """The base Job when the configuration gives none."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {},
        "spec": {
            "template": {
                "metadata": {},
                "spec": {"restartPolicy": "Never", "containers": [{"name": DEFAULT_CONTAINER}]},
            }
        },
    }


def missing_paths(manifest: Mapping[str, Any]) -> list[str]:
    """Every path of ``REQUIRED_PATHS`` that ``manifest`` lacks."""
    missing = []
    for path in REQUIRED_PATHS:
        try:
            jsonpointer.resolve_pointer(manifest, path)
        except jsonpointer.JsonPointerException:
            missing.append(path)
    return missing


def check_base_manifest(manifest: Mapping[str, Any]) -> None:
    """Reject a base manifest that cannot become a step's Job, listing every problem."""
    if not isinstance(manifest, Mapping):
        raise ManifestError("job_manifest must be a mapping (a Job manifest)")
    problems = [f"missing {p}" for p in missing_paths(manifest)]
    if manifest.get("apiVersion") not in (None, "batch/v1"):
        problems.append(f"apiVersion must be batch/v1, not {manifest.get('apiVersion')!r}")
    if manifest.get("kind") not in (None, "Job"):
        problems.append(f"kind must be Job, not {manifest.get('kind')!r}")
    try:
        containers = jsonpointer.resolve_pointer(manifest, "/spec/template/spec/containers")
    except jsonpointer.JsonPointerException:
        containers = None
    if containers is not None and (
        not isinstance(containers, list)
        or not containers
        or not all(isinstance(c, Mapping) for c in containers)
    ):
        problems.append("/spec/template/spec/containers must be a non-empty list of containers")
    if problems:
        raise ManifestError("invalid job_manifest: " + "; ".join(problems))


def parse_patch(ops: Any, source: str = "customizations") -> jsonpatch.JsonPatch:
    """A JSON patch from a list of operations, with a clear error when malformed."""
    if not isinstance(ops, list):
        raise ManifestError(f"{source} must be a list of JSON-patch operations (RFC 6902)")
    problems = []
    for i, op in enumerate(ops):
        if not isinstance(op, Mapping):
            problems.append(f"#{i}: not an object")
            continue
        kind = op.get("op")
        if kind not in ("add", "remove", "replace", "move", "copy", "test"):
            problems.append(
                f"#{i}: op must be add, remove, replace, move, copy or test (got {kind!r})"
            )
        if not isinstance(op.get("path"), str):
            problems.append(f"#{i}: needs a string 'path' (a JSON pointer like /spec/x)")
        if kind in ("add", "replace", "test") and "value" not in op:
            problems.append(f"#{i}: {kind} needs a 'value'")
        if kind in ("move", "copy") and not isinstance(op.get("from"), str):
            problems.append(f"#{i}: {kind} needs a string 'from'")
    if problems:
        raise ManifestError(f"invalid {source}: " + "; ".join(problems))
    try:
        return jsonpatch.JsonPatch(ops)
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
        raise ManifestError(f"invalid {source}: {exc}") from None


def apply_customizations(manifest: dict[str, Any], patch: jsonpatch.JsonPatch) -> dict[str, Any]:
    """Apply ``patch`` to a copy of ``manifest``, naming the operation that failed."""
    doc = copy.deepcopy(manifest)
    for i, op in enumerate(patch.patch):
        try:
            doc = jsonpatch.JsonPatch([op]).apply(doc)
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
            what = f"{op.get('op')} {op.get('path')}"
            raise ManifestError(f"customization #{i} ({what}) failed: {exc}") from None
    return doc


def merge_resources(*layers: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """Container resources from layers (later wins).

    A layer is either ``{"requests": {...}, "limits": {...}}`` or a flat map
    like ``{"cpu": "1", "memory": "1Gi"}``, which sets requests and limits
    to the same values.
    """
    out: dict[str, dict[str, str]] = {}
    for layer in layers:
        if not layer:
            continue
        if set(layer) <= {"requests", "limits"}:
            parts = {k: v for k, v in layer.items() if isinstance(v, Mapping)}
            bad = [k for k, v in layer.items() if not isinstance(v, Mapping)]
            if bad:
                raise ManifestError(f"resources.{bad[0]} must be a mapping like {{'cpu': '1'}}")
        else:
            parts = {"requests": layer, "limits": layer}
        for section, values in parts.items():
            target = out.setdefault(section, {})
            for name, qty in values.items():
                if isinstance(qty, Mapping | list) or qty is None:
                    raise ManifestError(f"resources: {name} must be a quantity like '1' or '1Gi'")
                target[str(name)] = str(qty)
    return out


# -- configuration ------------------------------------------------------------------

#: Fields a step's or run's ``infra_overrides`` may not change.
_CREDENTIAL_FIELDS = (
    "in_cluster",
    "kubeconfig",
    "context",
    "api_server",
    "token",
    "ca_cert",
    "verify_ssl",
)


class KubernetesConfig(InfraConfig):
    """Configuration of the kubernetes infrastructure (``FERRYMAN_INFRA_CONFIG["kubernetes"]``)."""

    namespace: str = "default"
    """Namespace the Jobs are created in."""
    image: str | None = None
    """Image of python steps (it must have ferryman and the pipeline's code installed)."""
    python: str = "python"
    """Interpreter inside the image that runs python steps."""
    service_account_name: str | None = None
    """``spec.template.spec.serviceAccountName`` of the pods."""
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    """``imagePullPolicy`` of the step's container (default: Kubernetes' rule)."""
    env: dict[str, str | None] = Field(default_factory=dict)
    """Env of every step's container (a step's env wins; ``None`` removes a variable)."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Extra labels on Jobs and pods (keys and values made valid)."""
    resources: dict[str, Any] = Field(default_factory=dict)
    """Container resources: ``{"requests": {...}, "limits": {...}}`` (a step's win)."""
    ttl_seconds_after_finished: int | None = Field(default=None, ge=0)
    """``ttlSecondsAfterFinished``: Kubernetes deletes finished Jobs after this."""
    job_manifest: dict[str, Any] | None = None
    """Base Job manifest (with apiVersion, kind, metadata, spec.template.spec.containers)."""
    customizations: list[dict[str, Any]] | str | None = None
    """RFC 6902 JSON patch applied last: a list of operations or a path to a YAML/JSON file."""
    pod_watch_timeout_seconds: float = Field(default=300.0, gt=0)
    """How long a pod may stay Pending before the step fails with the pod's reason."""
    watch_seconds: int = Field(default=60, ge=1, le=3600)
    """Length of one watch request before it is renewed (never a step timeout)."""
    in_cluster: bool = False
    """Use the pod's service account (when ferryman itself runs in the cluster)."""
    kubeconfig: str | None = None
    """Path of a kubeconfig file (default: ``$KUBECONFIG`` or ``~/.kube/config``)."""
    context: str | None = None
    """Context of the kubeconfig to use (default: its current context)."""
    api_server: str | None = None
    """URL of the API server, for explicit credentials (with ``token``)."""
    token: SecretStr | None = None
    """Bearer token for ``api_server`` (never shown)."""
    ca_cert: str | None = None
    """CA certificate file that signs ``api_server``'s certificate."""
    verify_ssl: bool = True
    """Verify ``api_server``'s certificate (turn off only for tests)."""

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, v: str) -> str:
        if not is_dns_label(v):
            raise ValueError(
                f"namespace {v!r} is not a valid Kubernetes namespace (lower-case letters, "
                "digits and '-', at most 63 characters, starting and ending alphanumeric)"
            )
        return v

    @field_validator("job_manifest")
    @classmethod
    def _manifest(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None:
            check_base_manifest(v)
        return v

    @field_validator("customizations")
    @classmethod
    def _customizations(
        cls, v: list[dict[str, Any]] | str | None
    ) -> list[dict[str, Any]] | str | None:
        if v is not None:
            parse_patch(load_customizations(v), source=_patch_source(v))
        return v

    @field_validator("resources")
    @classmethod
    def _resources(cls, v: dict[str, Any]) -> dict[str, Any]:
        merge_resources(v)
        return v

    @model_validator(mode="after")
    def _credentials(self) -> KubernetesConfig:
        problems = []
        if self.api_server and self.in_cluster:
            problems.append("api_server and in_cluster exclude each other")
        if self.api_server and (self.kubeconfig or self.context):
            problems.append("api_server excludes kubeconfig and context")
        if self.in_cluster and (self.kubeconfig or self.context):
            problems.append("in_cluster excludes kubeconfig and context")
        if not self.api_server and (self.token is not None or self.ca_cert):
            problems.append("token and ca_cert need api_server")
        if problems:
            raise ValueError("kubernetes credentials: " + "; ".join(problems))
        return self

    def patch(self) -> Any:
        """The customizations as a ``jsonpatch.JsonPatch`` (or None)."""
        if self.customizations is None:
            return None
        return parse_patch(
            load_customizations(self.customizations), _patch_source(self.customizations)
        )

    def with_overrides(self, overrides: dict[str, Any]) -> KubernetesConfig:
        """This configuration with a step's or run's ``infra_overrides`` applied."""
        if not overrides:
            return self
        bad = sorted(set(overrides) & set(_CREDENTIAL_FIELDS))
        if bad:
            raise ValueError(
                f"infra_overrides may not change the kubernetes credentials ({', '.join(bad)})"
            )
        data = self.model_dump()
        data.update(overrides)
        return KubernetesConfig.model_validate(data)


def _patch_source(v: list[dict[str, Any]] | str) -> str:
    return f"customizations file {v}" if isinstance(v, str) else "customizations"


def load_customizations(v: list[dict[str, Any]] | str) -> Any:
    """The operations of an inline patch, or those read from a YAML/JSON file."""
    if not isinstance(v, str):
        return v
    path = Path(v).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ManifestError(f"cannot read customizations file {v}: {exc.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ManifestError(f"customizations file {v} is not valid YAML/JSON: {exc}") from None


# -- the Job of one attempt ------------------------------------------------------------


def build_job(config: KubernetesConfig, launch: StepLaunch) -> dict[str, Any]:
    """The Job manifest for one attempt (with real secret values).

    Base manifest (or the default) + shortcut fields + customizations; a
    step's or run's ``infra_overrides`` are applied to ``config`` first.
    """
    cfg = config.with_overrides(launch.overrides)
    step = launch.step
    if step.kind == "container":
        image = step.image
    elif step.kind == "python" and step.function is not None:
        image = cfg.image
        if not image:
            raise ManifestError(
                f"python step {launch.node!r} needs an image with ferryman installed: set "
                '"image" in the kubernetes infrastructure config or the step\'s infra_overrides'
            )
    else:
        raise ManifestError(f"the kubernetes infrastructure cannot run {step.kind!r} steps")
    job = copy.deepcopy(cfg.job_manifest) if cfg.job_manifest else default_manifest()
    meta = job.setdefault("metadata", {})
    meta.pop("name", None)  # every attempt gets a fresh name
    meta["generateName"] = job_name_prefix(launch.pipeline, launch.node)
    meta["namespace"] = cfg.namespace
    own = {
        LABEL_PREFIX + "run-id": launch.run_id,
        LABEL_PREFIX + "step": launch.node,
        LABEL_PREFIX + "attempt": str(launch.attempt),
        LABEL_PREFIX + "pipeline": launch.pipeline,
        LABEL_PREFIX + "namespace": launch.namespace,
    }
    meta["labels"] = make_labels(meta.get("labels") or {}, cfg.labels, launch.labels, own)
    spec = job["spec"]
    spec["backoffLimit"] = 0
    if cfg.ttl_seconds_after_finished is not None:
        spec["ttlSecondsAfterFinished"] = cfg.ttl_seconds_after_finished
    template = spec["template"]
    tmeta = template.get("metadata") or {}
    template["metadata"] = tmeta
    tmeta["labels"] = make_labels(tmeta.get("labels") or {}, cfg.labels, launch.labels, own)
    pod = template["spec"]
    pod.setdefault("restartPolicy", "Never")
    if cfg.service_account_name:
        pod["serviceAccountName"] = cfg.service_account_name
    container = pod["containers"][0]
    container.setdefault("name", DEFAULT_CONTAINER)
    container["image"] = image
    if cfg.image_pull_policy:
        container["imagePullPolicy"] = cfg.image_pull_policy
    command, args = container_command(launch, python=cfg.python)
    if command is not None:
        container["command"] = command
    if args is not None:
        container["args"] = args
    env = container_env(launch, cfg.env)
    removed = {k for k, v in {**cfg.env, **launch.env}.items() if v is None}
    kept = [
        e
        for e in container.get("env") or []
        if isinstance(e, dict) and e.get("name") not in env and e.get("name") not in removed
    ]
    container["env"] = kept + [{"name": k, "value": v} for k, v in env.items()]
    resources = merge_resources(container.get("resources") or {}, cfg.resources, step.resources)
    if resources:
        container["resources"] = resources
    patch = cfg.patch()
    if patch is not None:
        job = apply_customizations(job, patch)
        missing = missing_paths(job)
        if missing:
            raise ManifestError("the customizations removed required paths: " + ", ".join(missing))
        if job.get("apiVersion") != "batch/v1" or job.get("kind") != "Job":
            raise ManifestError("the customizations must keep apiVersion batch/v1, kind Job")
    return job

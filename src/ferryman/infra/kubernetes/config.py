"""Settings of the kubernetes infrastructure and their per-step/per-run overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from ferryman.infra.base import InfraConfig
from ferryman.infra.kubernetes.manifest import (
    ManifestError,
    check_base_manifest,
    merge_resources,
    parse_patch,
)
from ferryman.infra.kubernetes.names import is_dns_label
from ferryman.yaml_reader import YamlError, parse_yaml

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
        return parse_yaml(text)  # bounded: no alias bombs, no duplicate keys
    except YamlError as exc:
        raise ManifestError(f"customizations file {v} is not valid YAML/JSON: {exc}") from None

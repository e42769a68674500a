"""The Job of one attempt: base manifest + shortcut fields + customizations."""

from __future__ import annotations

import copy
from typing import Any

from ferryman.domain.spec import ContainerStep, PythonStep
from ferryman.infra.base import StepLaunch
from ferryman.infra.container import container_command, container_env
from ferryman.infra.kubernetes.config import KubernetesConfig
from ferryman.infra.kubernetes.manifest import (
    DEFAULT_CONTAINER,
    ManifestError,
    apply_customizations,
    default_manifest,
    merge_resources,
    missing_paths,
)
from ferryman.infra.kubernetes.names import LABEL_PREFIX, job_name_prefix, make_labels


def build_job(config: KubernetesConfig, launch: StepLaunch) -> dict[str, Any]:
    """The Job manifest for one attempt (with real secret values).

    Base manifest (or the default) + shortcut fields + customizations; a
    step's or run's ``infra_overrides`` are applied to ``config`` first.
    """
    cfg = config.with_overrides(launch.overrides)
    step = launch.step
    if isinstance(step, ContainerStep):
        image: str | None = step.image
    elif isinstance(step, PythonStep):
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

"""The container settings of one attempt, worked out without a daemon."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ferryman.domain.spec import ContainerStep
from ferryman.infra.base import StepLaunch
from ferryman.infra.container import container_command, container_env
from ferryman.infra.docker.config import DockerConfig, DockerConfigError, merge_config
from ferryman.infra.docker.names import (
    PullPolicy,
    container_name,
    cpu_count,
    docker_labels,
    memory_bytes,
    parse_volumes,
    pull_policy,
)


@dataclass
class Plan:
    """Everything ``containers.create`` gets, plus what ``start`` does around it."""

    image: str
    pull_policy: PullPolicy
    name: str
    entrypoint: list[str] | None
    command: list[str] | None
    environment: dict[str, str]
    labels: dict[str, str]
    volumes: dict[str, dict[str, str]]
    network_mode: str | None
    networks: list[str]
    mem_limit: int | None
    nano_cpus: int | None
    working_dir: str | None
    user: str | None
    auto_remove: bool
    config: DockerConfig

    def create_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "image": self.image,
            "entrypoint": self.entrypoint,
            "command": self.command,
            "environment": self.environment,
            "labels": self.labels,
            "volumes": self.volumes or None,
            "detach": True,
            "stdin_open": False,
            "tty": False,
        }
        if self.network_mode:
            kw["network_mode"] = self.network_mode
        elif self.networks:
            kw["network"] = self.networks[0]
        for key in ("mem_limit", "nano_cpus", "working_dir", "user"):
            value = getattr(self, key)
            if value is not None:
                kw[key] = value
        return kw


def make_plan(config: DockerConfig, launch: StepLaunch) -> Plan:
    """Work out the container settings of one attempt (no daemon needed):
    ``config`` with the step's and the run's overrides merged in."""
    cfg = merge_config(config, launch.overrides, f"the overrides of step {launch.node!r}")
    step = launch.step
    image = step.image if isinstance(step, ContainerStep) else cfg.image
    if not image:
        raise DockerConfigError(
            f"python step {launch.node!r} on docker needs an image with ferryman "
            "installed: set 'image' in the docker settings or the step's infra_overrides"
        )
    entrypoint, command = container_command(launch, cfg.python)
    env = container_env(launch, cfg.env)
    own = {
        "run-id": launch.run_id,
        "step": launch.node,
        "attempt": str(launch.attempt),
        "pipeline": launch.pipeline,
        "namespace": launch.namespace,
    }
    labels = docker_labels({**cfg.labels, **launch.labels}, own)
    volumes = {v.source: {"bind": v.target, "mode": v.mode} for v in parse_volumes(cfg.volumes)}
    res = step.resources
    mem = cfg.mem_limit if cfg.mem_limit is not None else res.get("memory")
    cpus = cfg.cpus if cfg.cpus is not None else res.get("cpu")
    try:
        mem_bytes = memory_bytes(mem) if mem is not None else None
        nano = int(cpu_count(cpus) * 1e9) if cpus is not None else None
    except ValueError as exc:
        raise DockerConfigError(f"step {launch.node!r} resources: {exc}") from None
    return Plan(
        image=image,
        pull_policy=pull_policy(image, cfg.pull_policy),
        name=container_name(launch.pipeline, launch.node, launch.run_id, launch.attempt),
        entrypoint=entrypoint,
        command=command,
        environment=env,
        labels=labels,
        volumes=volumes,
        network_mode=cfg.network_mode,
        networks=list(cfg.networks),
        mem_limit=mem_bytes,
        nano_cpus=nano,
        working_dir=cfg.working_dir,
        user=cfg.user,
        auto_remove=cfg.auto_remove,
        config=cfg,
    )

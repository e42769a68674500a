"""Settings of the docker infrastructure and their per-step/per-run overrides."""

from __future__ import annotations

import os
from typing import Any

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator

from ferryman.infra.base import InfraConfig
from ferryman.infra.docker.names import PullPolicy, cpu_count, memory_bytes, parse_volumes


class DockerConfigError(ValueError):
    """Invalid docker settings (configured or per-step/per-run overrides)."""


class RegistryAuth(InfraConfig):
    """Credentials for pulling from a private registry (never shown)."""

    username: str
    password: SecretStr | None = None
    """The password itself (prefer ``password_env``: settings may be printed)."""
    password_env: str | None = None
    """Name of a variable of the worker's environment holding the password."""
    registry: str | None = None
    """Server address; default: the image's own registry."""

    @model_validator(mode="after")
    def _one_password(self) -> RegistryAuth:
        if (self.password is None) == (self.password_env is None):
            raise ValueError("give exactly one of password and password_env")
        return self

    def secret(self) -> str:
        """The password (from the environment for ``password_env``)."""
        if self.password is not None:
            return self.password.get_secret_value()
        assert self.password_env is not None
        value = os.environ.get(self.password_env)
        if not value:
            raise RuntimeError(
                f"registry password variable {self.password_env!r} is not set for the worker"
            )
        return value


class DockerConfig(InfraConfig):
    """Configuration of the docker infrastructure (``FERRYMAN_INFRA_CONFIG["docker"]``)."""

    image: str | None = None
    """Image of python steps (a container step names its own image)."""
    base_url: str | None = None
    """Docker daemon address (``unix:///var/run/docker.sock``, ``tcp://host:2376``);
    default: ``DOCKER_HOST`` or the local socket."""
    api_timeout: float = Field(default=60.0, gt=0)
    """Timeout of one Docker API call in seconds (never applies to waiting for a step)."""
    max_pool_size: int = Field(default=64, ge=1)
    """Connections kept to the daemon (each running step holds three: two log
    streams and its wait)."""
    pull_policy: PullPolicy | None = None
    """``always``, ``if_not_present`` or ``never``; default: by the image's tag."""
    registry: RegistryAuth | None = None
    env: dict[str, str | None] = Field(default_factory=dict)
    """Environment of every container (under ferryman's and the step's)."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Labels of every container (keys converted to reverse-DNS)."""
    volumes: list[str] = Field(default_factory=list)
    """``src:dst[:ro|rw]`` bind mounts (absolute host path) or named volumes."""
    network_mode: str | None = None
    """``none``, ``host``, ``bridge``, ``container:<id>``; excludes ``networks``."""
    networks: list[str] = Field(default_factory=list)
    """User-defined networks to connect the container to."""
    mem_limit: str | int | None = None
    """Memory limit (``512m``, ``1Gi`` or bytes); default: the step's ``resources.memory``."""
    cpus: float | str | None = None
    """CPU limit (``0.5``, ``500m``); default: the step's ``resources.cpu``."""
    auto_remove: bool = True
    """Remove the container after its exit code and logs were collected."""
    python: str = "python"
    """Interpreter inside the image that runs python steps."""
    working_dir: str | None = None
    """Working directory inside the container (default: the image's)."""
    user: str | None = None
    """User inside the container (default: the image's)."""
    grace_seconds: float = Field(default=10.0, ge=0)
    """Default grace between SIGTERM and SIGKILL when ``kill`` is given none."""

    @field_validator("volumes")
    @classmethod
    def _volumes(cls, v: list[str]) -> list[str]:
        parse_volumes(v)
        return v

    @field_validator("mem_limit")
    @classmethod
    def _mem(cls, v: str | int | None) -> str | int | None:
        if v is not None:
            memory_bytes(v)
        return v

    @field_validator("cpus")
    @classmethod
    def _cpus(cls, v: float | str | None) -> float | str | None:
        if v is not None:
            cpu_count(v)
        return v

    @model_validator(mode="after")
    def _network(self) -> DockerConfig:
        if self.network_mode and self.networks:
            raise ValueError("set either network_mode or networks, not both")
        return self


def _errors(exc: ValidationError) -> str:
    out = []
    for e in exc.errors():
        where = ".".join(str(p) for p in e["loc"]) or "settings"
        msg = str(e["msg"]).removeprefix("Value error, ")
        out.append(f"{where}: {msg}")
    return "; ".join(out)


def merge_config(base: DockerConfig, overrides: dict[str, Any], where: str) -> DockerConfig:
    """``overrides`` validated against ``DockerConfig`` and merged over ``base``.

    ``env`` and ``labels`` are merged key by key; every other key replaces
    the configured value. Raises ``DockerConfigError`` listing every problem.
    """
    if not overrides:
        return base
    data: dict[str, Any] = base.model_dump(exclude_unset=True)
    reg = base.registry
    if isinstance(data.get("registry"), dict) and reg is not None and reg.password is not None:
        data["registry"]["password"] = reg.password.get_secret_value()
    for key, value in overrides.items():
        if key in ("env", "labels") and isinstance(value, dict):
            data[key] = {**data.get(key, {}), **value}
        else:
            data[key] = value
    try:
        return DockerConfig.model_validate(data)
    except ValidationError as exc:
        raise DockerConfigError(f"invalid docker settings in {where}: {_errors(exc)}") from None

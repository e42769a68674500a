"""The ``docker`` infrastructure (SPEC §7): a step in a Docker container.

Every attempt gets one container, created and started through the Docker SDK
(blocking calls; the worker calls ``start``/``watch``/``kill`` from threads):

- the image is pulled according to the pull policy (see
  ``docker_names.pull_policy``), with the configured registry credentials;
- the container's command is the step's ``command`` (Docker's entrypoint) and
  ``args`` (Docker's command), rendered with ``container_command``; a python
  step runs ``<python> -m ferryman.runtime`` inside the image;
- the env is the configured env + ferryman's variables + the step's env and
  secrets (``None`` unsets, see ``container_env``); the worker's own env is
  never copied in;
- labels: the configured and run labels with keys converted to Docker's
  reverse-DNS style, plus ``io.ferryman.{run-id,step,attempt,pipeline,namespace}``;
- the name ``pipeline-step-<run8>-<attempt>`` slugified to Docker's rules;
  on a name conflict (HTTP 409) ``-2``, ``-3``, … are tried;
- stdout and stderr are followed by two threads and passed to the sink line by
  line, so the runtime's result line arrives intact;
- ``watch`` waits for the container to stop, takes its exit code and, with
  ``auto_remove`` (default), removes it only *after* the logs are drained and
  the exit code is read. A container that vanished (removed from outside, or
  the daemon lost it) is reported with ``EXIT_LOST`` and a reason saying so.

The identifier is the container id. ``kill`` is ``docker stop`` with the grace
period (SIGTERM, then SIGKILL). ``attach`` resumes the log streams of a
container a lost worker started.
"""

from __future__ import annotations

import codecs
import contextlib
import datetime as dt
import logging
import math
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import docker
import requests
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.models.containers import Container
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator

from ferryman.infra.base import (
    EXIT_LOST,
    MASK,
    PAYLOAD_ENV,
    RESULT_MARKER,
    InfraConfig,
    Infrastructure,
    LogSink,
    Result,
    StepLaunch,
)
from ferryman.infra.container import container_command, container_env
from ferryman.infra.docker_names import (
    PullPolicy,
    container_name,
    cpu_count,
    docker_labels,
    memory_bytes,
    numbered_name,
    parse_volumes,
    pull_policy,
    split_image,
)

log = logging.getLogger(__name__)

#: How many numbered names are tried when a container name is taken.
NAME_ATTEMPTS = 20
#: How long ``watch`` waits for the log readers once the container stopped.
READER_JOIN_SECONDS = 10.0


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


@dataclass
class _Handle:
    container_id: str
    client: docker.DockerClient
    auto_remove: bool
    readers: list[threading.Thread] = field(default_factory=list)
    kill_reason: str | None = None
    result: Result | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


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


class DockerInfrastructure(Infrastructure):
    """Run container steps (and python steps in an image with ferryman) on Docker."""

    kind = "docker"
    config_model = DockerConfig
    config: DockerConfig
    reattachable = True

    def __init__(self, config: DockerConfig | None = None) -> None:
        super().__init__(config)
        self._clients: dict[str | None, docker.DockerClient] = {}
        self._handles: dict[str, _Handle] = {}
        self._lock = threading.Lock()

    # -- helpers -----------------------------------------------------------------

    def _client(self, cfg: DockerConfig | None = None) -> docker.DockerClient:
        cfg = cfg or self.config
        with self._lock:
            client = self._clients.get(cfg.base_url)
            if client is None:
                try:
                    if cfg.base_url:
                        client = docker.DockerClient(
                            base_url=cfg.base_url,
                            timeout=math.ceil(cfg.api_timeout),
                            max_pool_size=cfg.max_pool_size,
                        )
                    else:
                        client = docker.from_env(
                            timeout=math.ceil(cfg.api_timeout), max_pool_size=cfg.max_pool_size
                        )
                except DockerException as exc:
                    where = cfg.base_url or "DOCKER_HOST or the local socket"
                    raise RuntimeError(f"cannot reach the Docker daemon ({where}): {exc}") from None
                self._clients[cfg.base_url] = client
            return client

    @staticmethod
    def _check(launch: StepLaunch) -> None:
        kind = launch.step.kind
        if kind == "container" and launch.step.image:
            return
        if kind == "python" and launch.step.function is not None:
            return
        raise ValueError(
            f"the docker infrastructure runs container and python steps only "
            f"(step {launch.node!r} is of kind {kind!r})"
        )

    def plan(self, launch: StepLaunch) -> Plan:
        """Work out the container settings of one attempt (no daemon needed)."""
        self._check(launch)
        cfg = merge_config(self.config, launch.overrides, f"the overrides of step {launch.node!r}")
        image = launch.step.image or cfg.image
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
        res = launch.step.resources
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

    def _ensure_image(self, client: docker.DockerClient, plan: Plan) -> None:
        image, policy = plan.image, plan.pull_policy
        if policy != "always":
            try:
                client.images.get(image)
                return
            except ImageNotFound:
                if policy == "never":
                    raise RuntimeError(
                        f"image {image!r} is not present on the Docker host and the pull "
                        "policy is 'never' (build or pull it there, or change pull_policy)"
                    ) from None
        repo, tag, digest = split_image(image)
        auth = None
        reg = plan.config.registry
        password = ""
        if reg is not None:
            password = reg.secret()
            auth = {"username": reg.username, "password": password}
            if reg.registry:
                auth["serveraddress"] = reg.registry
        try:
            client.images.pull(
                repo, tag=f"@{digest}" if digest else (tag or "latest"), auth_config=auth
            )
        except (APIError, requests.RequestException) as exc:
            msg = _api_message(exc)
            if password:
                msg = msg.replace(password, MASK)
            raise RuntimeError(f"could not pull image {image!r} ({policy}): {msg}") from None

    def _create(self, client: docker.DockerClient, plan: Plan) -> Container:
        kwargs = plan.create_kwargs()
        last: Exception | None = None
        for n in range(NAME_ATTEMPTS):
            name = numbered_name(plan.name, n)
            try:
                return client.containers.create(name=name, **kwargs)
            except APIError as exc:
                if exc.status_code == 409:  # the name is taken
                    last = exc
                    continue
                raise RuntimeError(f"could not create the container: {_api_message(exc)}") from None
        raise RuntimeError(
            f"could not create the container: the names {plan.name!r} to "
            f"{numbered_name(plan.name, NAME_ATTEMPTS - 1)!r} are all taken ({last})"
        )

    def _follow(
        self,
        handle: _Handle,
        sink: LogSink,
        since: float | None = None,
        replay_result: bool = False,
    ) -> None:
        for stream in ("stdout", "stderr"):
            t = threading.Thread(
                target=_pump,
                args=(handle, stream, sink, since, replay_result and stream == "stdout"),
                name=f"ferryman-docker-{stream}-{handle.container_id[:12]}",
                daemon=True,
            )
            handle.readers.append(t)
            t.start()

    # -- Infrastructure ------------------------------------------------------------

    def start(self, launch: StepLaunch, sink: LogSink) -> str:
        plan = self.plan(launch)
        client = self._client(plan.config)
        try:
            self._ensure_image(client, plan)
            container = self._create(client, plan)
        except requests.RequestException as exc:
            raise RuntimeError(f"Docker daemon unreachable: {exc}") from None
        cid = str(container.id)
        handle = _Handle(cid, client, plan.auto_remove)
        try:
            for net in plan.networks[1:]:
                client.networks.get(net).connect(cid)
            container.start()
        except (APIError, requests.RequestException) as exc:
            _remove(client, cid)
            raise RuntimeError(f"could not start the container: {_api_message(exc)}") from None
        self._follow(handle, sink)
        with self._lock:
            self._handles[cid] = handle
        return cid

    def attach(self, identifier: str, sink: LogSink, since: dt.datetime | None = None) -> bool:
        """Resume following a container that a lost worker started.

        Lines are streamed again from ``since`` (the time of the last line the
        lost worker stored; the whole log when ``None``): lines of that same
        instant may repeat, none are lost. The runtime's result line is also
        looked for in the output before ``since``, so a python step that
        finished while nobody watched still reports its value. Returns False
        when the container no longer exists.
        """
        client = self._client()
        try:
            client.api.inspect_container(identifier)
        except NotFound:
            return False
        handle = _Handle(identifier, client, self.config.auto_remove)
        start = since.timestamp() if since is not None else None
        self._follow(handle, sink, since=start, replay_result=start is not None)
        with self._lock:
            self._handles[identifier] = handle
        return True

    def watch(self, identifier: str) -> Result:
        with self._lock:
            handle = self._handles.get(identifier)
        if handle is None:  # not ours: wait for it anyway (no logs)
            handle = _Handle(identifier, self._client(), auto_remove=False)
        client = handle.client
        code, reason = _wait(client, identifier)
        deadline = time.monotonic() + READER_JOIN_SECONDS
        for t in handle.readers:
            t.join(max(0.0, deadline - time.monotonic()))
        with handle.lock:
            if handle.result is None:
                if code != EXIT_LOST:
                    if handle.kill_reason is not None:
                        reason = handle.kill_reason
                    if handle.auto_remove:
                        _remove(client, identifier)
                handle.result = Result(code, identifier, reason=reason)
            result = handle.result
        with self._lock:
            self._handles.pop(identifier, None)
        return result

    def kill(self, identifier: str, grace_seconds: float | None = None) -> None:
        """``docker stop`` with the grace period (SIGTERM, SIGKILL after it).

        Idempotent: a stopped or unknown container is left alone. Works for a
        container started by another worker (the identifier is its id).
        """
        grace = self.config.grace_seconds if grace_seconds is None else max(0.0, grace_seconds)
        with self._lock:
            handle = self._handles.get(identifier)
        client = handle.client if handle else self._client()
        if handle is not None and handle.kill_reason is None:
            handle.kill_reason = f"killed: stopped with {grace:g}s grace"
        try:
            client.api.stop(identifier, timeout=math.ceil(grace))
        except NotFound:
            return
        except APIError as exc:
            log.warning("could not stop container %s: %s", identifier[:12], _api_message(exc))
            with contextlib.suppress(APIError):
                client.api.kill(identifier)

    def preview(self, launch: StepLaunch) -> dict[str, Any]:
        plan = self.plan(launch)
        env: dict[str, str] = {}
        for key, value in plan.environment.items():
            if key in launch.secrets:
                env[key] = MASK
            elif key == PAYLOAD_ENV:
                env[key] = launch.mask(value)
            else:
                env[key] = launch.mask(value)
        out: dict[str, Any] = {
            "kind": self.kind,
            "image": plan.image,
            "pull_policy": plan.pull_policy,
            "name": plan.name,
            "entrypoint": plan.entrypoint,
            "command": plan.command,
            "env": env,
            "labels": plan.labels,
            "volumes": plan.volumes,
            "network_mode": plan.network_mode,
            "networks": plan.networks,
            "mem_limit": plan.mem_limit,
            "nano_cpus": plan.nano_cpus,
            "working_dir": plan.working_dir,
            "user": plan.user,
            "auto_remove": plan.auto_remove,
            "docker_host": plan.config.base_url or "<DOCKER_HOST or local socket>",
        }
        if plan.config.registry is not None:
            out["registry"] = {
                "username": plan.config.registry.username,
                "password": MASK if plan.config.registry.password else None,
                "password_env": plan.config.registry.password_env,
                "registry": plan.config.registry.registry,
            }
        return out

    def close(self) -> None:
        """Close the Docker clients (running containers keep running)."""
        with self._lock:
            clients = list(self._clients.values())
            self._clients.clear()
        for c in clients:
            try:
                c.close()
            except Exception:  # pragma: no cover - best effort
                log.debug("closing a docker client failed", exc_info=True)


# -- helpers -------------------------------------------------------------------------


def _api_message(exc: Exception) -> str:
    if isinstance(exc, APIError) and exc.explanation:
        return str(exc.explanation)
    return str(exc)


def _remove(client: docker.DockerClient, cid: str) -> None:
    try:
        client.api.remove_container(cid, force=True)
    except NotFound:
        pass
    except APIError as exc:
        if exc.status_code != 409:  # 409: removal already in progress
            log.warning("could not remove container %s: %s", cid[:12], _api_message(exc))


def _wait(client: docker.DockerClient, cid: str) -> tuple[int, str | None]:
    """Block until the container stops; ``(exit code, reason)``.

    ``EXIT_LOST`` with a reason when the container vanished or the daemon
    stayed unreachable. A lost connection is retried for a while (a daemon
    restart must not fail a healthy step).
    """
    failures = 0
    while True:
        try:
            client.api.wait(cid, timeout=None)
            break
        except NotFound:
            return EXIT_LOST, f"container {cid[:12]} disappeared (removed from outside)"
        except (requests.RequestException, APIError) as exc:
            failures += 1
            if failures > 30:
                return EXIT_LOST, f"lost contact with the Docker daemon: {_api_message(exc)}"
            time.sleep(min(1.0 * failures, 5.0))
    try:
        info = client.api.inspect_container(cid)
    except NotFound:
        return EXIT_LOST, f"container {cid[:12]} disappeared (removed from outside)"
    state = info.get("State", {})
    if state.get("Status") in ("removing", "dead"):
        return EXIT_LOST, (
            f"container {cid[:12]} disappeared (it is {state.get('Status')}: removed from outside)"
        )
    code = int(state.get("ExitCode", EXIT_LOST))
    reason = None
    if state.get("OOMKilled"):
        reason = f"out of memory (OOMKilled, exit code {code})"
    elif state.get("Error"):
        reason = f"exit code {code}: {state['Error']}"
    return code, reason


def _lines(chunks: Iterator[bytes]) -> Iterator[str]:
    """Reassemble chunks into lines (UTF-8, invalid bytes replaced)."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    buf = ""
    for chunk in chunks:
        buf += decoder.decode(chunk)
        while True:
            nl = buf.find("\n")
            if nl < 0:
                break
            line, buf = buf[:nl], buf[nl + 1 :]
            yield line[:-1] if line.endswith("\r") else line
    buf += decoder.decode(b"", final=True)
    if buf:
        yield buf


def _pump(
    handle: _Handle, stream: str, sink: LogSink, since: float | None, replay_result: bool
) -> None:
    """Follow one stream of the container's log and pass each line to ``sink``."""
    api = handle.client.api
    cid = handle.container_id
    is_out = stream == "stdout"
    try:
        if replay_result and since is not None:
            # the result line may have been written while no worker watched
            old = api.logs(cid, stdout=True, stderr=False, stream=True, follow=False, until=since)
            for line in _lines(old):
                if line.startswith(RESULT_MARKER):
                    _deliver(sink, stream, line, cid)
        chunks = api.logs(
            cid, stdout=is_out, stderr=not is_out, stream=True, follow=True, since=since
        )
        for line in _lines(chunks):
            _deliver(sink, stream, line, cid)
    except NotFound:
        pass  # removed from outside: watch reports it
    except (APIError, requests.RequestException, OSError) as exc:
        log.warning("lost the %s of container %s: %s", stream, cid[:12], exc)


def _deliver(sink: LogSink, stream: str, line: str, cid: str) -> None:
    try:
        sink(stream, line)
    except Exception:
        log.exception("log sink failed for container %s (%s)", cid[:12], stream)

"""``DockerInfrastructure``: the ``Infrastructure`` interface over the pieces
of this package (settings, plan, container operations)."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
import threading
import time
from typing import Any

import docker
import requests
from docker.errors import APIError, DockerException, NotFound

from ferryman.infra.base import (
    EXIT_LOST,
    MASK,
    PAYLOAD_ENV,
    Infrastructure,
    LogSink,
    Result,
    StepLaunch,
)
from ferryman.infra.docker.config import DockerConfig
from ferryman.infra.docker.containers import (
    Handle,
    api_message,
    create_container,
    ensure_image,
    follow,
    remove_container,
    wait_container,
)
from ferryman.infra.docker.plan import Plan, make_plan

log = logging.getLogger(__name__)

#: How long ``watch`` waits for the log readers once the container stopped.
READER_JOIN_SECONDS = 10.0


class DockerInfrastructure(Infrastructure):
    """Run container steps (and python steps in an image with ferryman) on Docker."""

    kind = "docker"
    config_model = DockerConfig
    config: DockerConfig
    kinds = frozenset({"python", "container"})
    reattachable = True

    def __init__(self, config: DockerConfig | None = None) -> None:
        super().__init__(config)
        self._clients: dict[str | None, docker.DockerClient] = {}
        self._handles: dict[str, Handle] = {}
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

    def plan(self, launch: StepLaunch) -> Plan:
        """Work out the container settings of one attempt (no daemon needed)."""
        return make_plan(self.config, launch)

    # -- Infrastructure ------------------------------------------------------------

    def start(self, launch: StepLaunch, sink: LogSink) -> str:
        plan = self.plan(launch)
        client = self._client(plan.config)
        try:
            ensure_image(client, plan)
            container = create_container(client, plan)
        except requests.RequestException as exc:
            raise RuntimeError(f"Docker daemon unreachable: {exc}") from None
        cid = str(container.id)
        handle = Handle(cid, client, plan.auto_remove)
        try:
            for net in plan.networks[1:]:
                client.networks.get(net).connect(cid)
            container.start()
        except (APIError, requests.RequestException) as exc:
            remove_container(client, cid)
            raise RuntimeError(f"could not start the container: {api_message(exc)}") from None
        follow(handle, sink)
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
        if not identifier:  # the SDK refuses an empty id before asking the daemon
            return False
        client = self._client()
        try:
            client.api.inspect_container(identifier)
        except NotFound:
            return False
        handle = Handle(identifier, client, self.config.auto_remove)
        start = since.timestamp() if since is not None else None
        follow(handle, sink, since=start, replay_result=start is not None)
        with self._lock:
            self._handles[identifier] = handle
        return True

    def watch(self, identifier: str) -> Result:
        if not identifier:
            return Result(EXIT_LOST, identifier, reason="no container identifier")
        with self._lock:
            handle = self._handles.get(identifier)
        if handle is None:  # not ours: wait for it anyway (no logs)
            handle = Handle(identifier, self._client(), auto_remove=False)
        client = handle.client
        code, reason = wait_container(client, identifier)
        deadline = time.monotonic() + READER_JOIN_SECONDS
        for t in handle.readers:
            t.join(max(0.0, deadline - time.monotonic()))
        with handle.lock:
            if handle.result is None:
                if code != EXIT_LOST:
                    if handle.kill_reason is not None:
                        reason = handle.kill_reason
                    if handle.auto_remove:
                        remove_container(client, identifier)
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
        if not identifier:
            return
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
            log.warning("could not stop container %s: %s", identifier[:12], api_message(exc))
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

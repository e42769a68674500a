"""Talking to the Docker daemon about one container: image, creation, logs, end.

Blocking SDK calls, made from the worker's threads. A lost connection while
waiting is retried (a daemon restart must not fail a healthy step); a
container that vanished is reported with ``EXIT_LOST`` and a reason.
"""

from __future__ import annotations

import codecs
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import docker
import requests
from docker.errors import APIError, ImageNotFound, NotFound
from docker.models.containers import Container

from ferryman.infra.base import EXIT_LOST, MASK, RESULT_MARKER, LogSink, Result
from ferryman.infra.docker.names import numbered_name, split_image
from ferryman.infra.docker.plan import Plan

log = logging.getLogger(__name__)

#: How many numbered names are tried when a container name is taken.
NAME_ATTEMPTS = 20


@dataclass
class Handle:
    """One container this process follows."""

    container_id: str
    client: docker.DockerClient
    auto_remove: bool
    readers: list[threading.Thread] = field(default_factory=list)
    kill_reason: str | None = None
    result: Result | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def ensure_image(client: docker.DockerClient, plan: Plan) -> None:
    """Make sure the image is on the Docker host, by its pull policy."""
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
        msg = api_message(exc)
        if password:
            msg = msg.replace(password, MASK)
        raise RuntimeError(f"could not pull image {image!r} ({policy}): {msg}") from None


def create_container(client: docker.DockerClient, plan: Plan) -> Container:
    """Create the container; a taken name is retried as ``name-2``, ``name-3``, …"""
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
            raise RuntimeError(f"could not create the container: {api_message(exc)}") from None
    raise RuntimeError(
        f"could not create the container: the names {plan.name!r} to "
        f"{numbered_name(plan.name, NAME_ATTEMPTS - 1)!r} are all taken ({last})"
    )


def follow(
    handle: Handle, sink: LogSink, since: float | None = None, replay_result: bool = False
) -> None:
    """Follow stdout and stderr of the container in two threads, into ``sink``.

    ``since``: a Unix time to start from (the whole log when ``None``). With
    ``replay_result`` the runtime's result line is also looked for in the
    output before ``since``.
    """
    for stream in ("stdout", "stderr"):
        t = threading.Thread(
            target=_pump,
            args=(handle, stream, sink, since, replay_result and stream == "stdout"),
            name=f"ferryman-docker-{stream}-{handle.container_id[:12]}",
            daemon=True,
        )
        handle.readers.append(t)
        t.start()


def api_message(exc: Exception) -> str:
    """The daemon's explanation of an error, else the error itself."""
    if isinstance(exc, APIError) and exc.explanation:
        return str(exc.explanation)
    return str(exc)


def remove_container(client: docker.DockerClient, cid: str) -> None:
    """Remove the container (gone already, or being removed: fine)."""
    try:
        client.api.remove_container(cid, force=True)
    except NotFound:
        pass
    except APIError as exc:
        if exc.status_code != 409:  # 409: removal already in progress
            log.warning("could not remove container %s: %s", cid[:12], api_message(exc))


def wait_container(client: docker.DockerClient, cid: str) -> tuple[int, str | None]:
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
                return EXIT_LOST, f"lost contact with the Docker daemon: {api_message(exc)}"
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
    handle: Handle, stream: str, sink: LogSink, since: float | None, replay_result: bool
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

"""Fixtures for the docker tests: a real daemon and small local images.

No registry is reachable, so the test image is made with ``docker import``
from a root filesystem holding a static busybox. When no daemon can be
started here the tests skip with the reason, except under ``CI=true``,
where they fail.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

docker = pytest.importorskip("docker")

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
BUSYBOX_IMAGE = "ferryman-test/busybox:1"
APPLETS = ["sh", "echo", "cat", "true", "false", "sleep", "env", "ls", "test", "printf"]


def _ping() -> str | None:
    """``None`` when a daemon answers ``GET /_ping`` at ``DOCKER_HOST``, else why not.

    A raw socket (not the SDK, which leaks a socket when the daemon is absent).
    """
    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    try:
        if host.startswith("unix://"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(10)
            try:
                sock.connect(host.removeprefix("unix://"))
            except OSError:
                sock.close()
                raise
        elif host.startswith("tcp://"):
            name, _, port = host.removeprefix("tcp://").partition(":")
            sock = socket.create_connection((name, int(port or 2375)), timeout=10)
        else:
            return f"unsupported DOCKER_HOST {host!r}"
        with sock:
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            status = sock.recv(1024).split(b"\r\n", 1)[0]
    except OSError as exc:
        return f"{host}: {exc}"
    if b" 200" not in status:
        return f"{host} answered {status.decode(errors='replace')!r}"
    return None


def _unavailable(reason: str) -> None:
    msg = f"no usable Docker daemon: {reason}"
    if IN_CI:
        pytest.fail(msg + " (CI=true: the docker tests must run)")
    pytest.skip(msg)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    """A client of a running daemon (``scripts/ensure-docker.sh`` starts one)."""
    problem = _ping()
    if problem is not None:
        out = subprocess.run(
            ["bash", str(ROOT / "scripts" / "ensure-docker.sh")],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        problem = _ping()
        if problem is not None:
            _unavailable(f"{problem}; ensure-docker.sh said: {out.stdout.strip()}")
    client = docker.from_env(timeout=60)
    yield client
    client.close()


def rootfs_tar(busybox: str) -> bytes:
    """A root filesystem: static busybox + applet links + merged-/usr links."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("bin", "tmp", "etc", "usr"):
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        tar.add(busybox, arcname="bin/busybox")
        for applet in APPLETS:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type = tarfile.SYMTYPE
            info.linkname = "busybox"
            tar.addfile(info)
        # so that a host /usr mounted read-only provides /lib and /lib64 (python image)
        for link, target in (("lib", "usr/lib"), ("lib64", "usr/lib64")):
            info = tarfile.TarInfo(link)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
        data = b"root:x:0:0:root:/root:/bin/sh\n"
        info = tarfile.TarInfo("etc/passwd")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture(scope="session")
def busybox_image(docker_client: docker.DockerClient) -> str:
    """``ferryman-test/busybox:1`` built locally with ``docker import``."""
    try:
        docker_client.images.get(BUSYBOX_IMAGE)
        return BUSYBOX_IMAGE
    except docker.errors.ImageNotFound:
        pass
    busybox = shutil.which("busybox") or "/bin/busybox"
    if not os.path.exists(busybox):
        _unavailable("busybox-static is not installed (scripts/ensure-docker.sh installs it)")
    repo, tag = BUSYBOX_IMAGE.split(":")
    docker_client.api.import_image_from_data(
        rootfs_tar(busybox), repository=repo, tag=tag, changes=['CMD ["/bin/sh"]']
    )
    docker_client.images.get(BUSYBOX_IMAGE)
    return BUSYBOX_IMAGE


def python_volumes() -> list[str]:
    """Read-only mounts that give the busybox image this machine's Python and
    this worktree (ferryman's sources and virtual environment) at the same paths."""
    prefix = Path(os.path.realpath(sys.executable)).parent.parent
    mounts = ["/usr:/usr:ro", f"{ROOT}:{ROOT}:ro"]
    if not str(prefix).startswith("/usr"):
        mounts.append(f"{prefix}:{prefix}:ro")
    return mounts


def remove_labelled(client: docker.DockerClient, key: str, value: str) -> None:
    """Remove every container whose label ``key`` is ``value`` (test clean-up)."""
    for c in client.containers.list(all=True, filters={"label": f"{key}={value}"}):
        with contextlib.suppress(docker.errors.NotFound):
            c.remove(force=True)


def wait_for(predicate: object, timeout: float = 30.0, step: float = 0.1) -> None:
    """Poll ``predicate()`` until it is true or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(step)
    raise AssertionError(f"condition not met within {timeout}s")

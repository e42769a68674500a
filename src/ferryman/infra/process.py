"""The ``process`` infrastructure (SPEC §7): a step in a local subprocess.

Each attempt runs ``python -m ferryman.runtime`` in a fresh temporary working
directory, in its own session and process group, with env = the part of this
process's env that ``base.step_environment`` lets through (an allow-list plus
``FERRYMAN_STEP_ENV_PASSTHROUGH``; never ferryman's settings or secrets) +
the step's own ``FERRYMAN_*`` variables + the step's env and secrets
(``None`` unsets) + this infrastructure's plumbing (``FERRYMAN_PROCESS_TOKEN``,
``FERRYMAN_LIFELINE_FD``). stdout and stderr are streamed line by line to the
sink by two reader threads.

Process hygiene:

- ``kill`` sends SIGTERM to the whole process group, waits up to the grace
  period for the step's main process to exit, then sends SIGKILL to the
  group, so processes the step started are stopped too.
- When the step's main process ends (normally or not), whatever is left in
  its process group (background children) is SIGKILLed: a step does not leak
  processes, and its output pipes close so ``watch`` can return.
- On Linux the runtime asks the kernel to SIGKILL it when the worker dies
  (``PR_SET_PDEATHSIG``). That signal follows the *thread* that forked the
  child, so every step is spawned from one long-lived spawner thread rather
  than the (possibly short-lived) thread that calls ``start``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO, Any, TypeVar

from pydantic import Field

from ferryman.infra.base import (
    EXIT_LOST,
    MASK,
    PAYLOAD_ENV,
    InfraConfig,
    Infrastructure,
    LogSink,
    Result,
    StepLaunch,
)

log = logging.getLogger(__name__)

TOKEN_ENV = "FERRYMAN_PROCESS_TOKEN"
LIFELINE_ENV = "FERRYMAN_LIFELINE_FD"
_lifeline_fd: int | None = None


def _lifeline() -> int:
    """The read end of a pipe whose write end only this worker process holds.

    Every step inherits the read end. When the worker dies, however it dies,
    the kernel closes the write end and the step's runtime reads EOF and kills
    its process group. Unlike PR_SET_PDEATHSIG alone, this has no start-up
    race: a step whose worker died before it started sees EOF at once.
    """
    global _lifeline_fd
    with _spawner_lock:
        if _lifeline_fd is None:
            r, _w = os.pipe()  # both non-inheritable; _w stays open until we die
            _lifeline_fd = r
        return _lifeline_fd


# one environment string may not exceed 128 KiB on Linux (MAX_ARG_STRLEN);
# larger payloads are written to a file in the working directory
MAX_ENV_PAYLOAD = 64 * 1024
# how long watch waits for the output readers once the step's group is gone
# (only matters if a process that escaped the group still holds the pipes)
READER_JOIN_SECONDS = 5.0
_POLL = 0.02

T = TypeVar("T")


class ProcessConfig(InfraConfig):
    """Configuration of the process infrastructure."""

    python: str | None = None
    """Interpreter that runs the step (default: the worker's ``sys.executable``)."""
    workdir_root: str | None = None
    """Where the temporary working directories are created (default: the system's)."""
    keep_workdir: bool = False
    """Keep the working directory after the step ends (for debugging)."""
    grace_seconds: float = Field(default=10.0, ge=0)
    """Default grace between SIGTERM and SIGKILL when ``kill`` is given none."""


_spawner: ThreadPoolExecutor | None = None
_spawner_lock = threading.Lock()


def _in_spawner_thread(fn: Callable[[], T]) -> T:
    """Run ``fn`` in the process-wide spawner thread (which never exits)."""
    global _spawner
    with _spawner_lock:
        if _spawner is None:
            _spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ferryman-spawner")
        spawner = _spawner
    return spawner.submit(fn).result()


@dataclass
class _Handle:
    identifier: str
    proc: subprocess.Popen[str]
    workdir: str
    keep_workdir: bool
    readers: list[threading.Thread] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    reaped: bool = False
    detached: bool = False
    kill_reason: str | None = None
    result: Result | None = None


def parse_identifier(identifier: str) -> tuple[int, str] | None:
    """``process:<pid>:<token>`` → ``(pid, token)``, or ``None`` if malformed."""
    parts = identifier.split(":")
    if len(parts) != 3 or parts[0] != "process" or not parts[1].isdigit() or not parts[2]:
        return None
    return int(parts[1]), parts[2]


class ProcessInfrastructure(Infrastructure):
    """Run python steps as local subprocesses (the embedded default)."""

    kind = "process"
    config_model = ProcessConfig
    kinds = frozenset({"python"})
    config: ProcessConfig

    def __init__(self, config: ProcessConfig | None = None) -> None:
        super().__init__(config)
        self._handles: dict[str, _Handle] = {}
        self._lock = threading.Lock()

    # -- helpers ---------------------------------------------------------------

    def _command(self) -> list[str]:
        return [self.config.python or sys.executable, "-m", "ferryman.runtime"]

    # -- Infrastructure ----------------------------------------------------------

    def start(self, launch: StepLaunch, sink: LogSink) -> str:
        workdir = tempfile.mkdtemp(prefix="ferryman-", dir=self.config.workdir_root)
        token = uuid.uuid4().hex[:16]
        env = launch.full_env()
        payload = env[PAYLOAD_ENV]
        if len(payload) > MAX_ENV_PAYLOAD:
            path = os.path.join(workdir, ".ferryman-payload.json")
            with open(path, "w", encoding="utf-8") as f:
                f.write(payload)
            env[PAYLOAD_ENV] = "@" + path
        env[TOKEN_ENV] = token
        lifeline = _lifeline()
        env[LIFELINE_ENV] = str(lifeline)
        command = self._command()

        def spawn() -> subprocess.Popen[str]:
            return subprocess.Popen(
                command,
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                encoding="utf-8",
                errors="replace",
                bufsize=1,
                start_new_session=True,
                close_fds=True,
                pass_fds=(lifeline,),
            )

        try:
            proc = _in_spawner_thread(spawn)
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        identifier = f"process:{proc.pid}:{token}"
        handle = _Handle(identifier, proc, workdir, self.config.keep_workdir)
        for name, stream in (("stdout", proc.stdout), ("stderr", proc.stderr)):
            assert stream is not None
            t = threading.Thread(
                target=_pump,
                args=(stream, name, sink, handle),
                name=f"ferryman-{name}-{proc.pid}",
                daemon=True,
            )
            handle.readers.append(t)
            t.start()
        with self._lock:
            self._handles[identifier] = handle
        return identifier

    def watch(self, identifier: str) -> Result:
        with self._lock:
            handle = self._handles.get(identifier)
        if handle is None:
            return Result(
                EXIT_LOST,
                identifier,
                reason="unknown process (it was not started by this worker process)",
            )
        proc = handle.proc
        _wait_exited(proc)
        with handle.lock:
            if not handle.reaped:
                # the step is done: stop whatever it left behind in its group
                _killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                handle.reaped = True
        deadline = time.monotonic() + READER_JOIN_SECONDS
        for t in handle.readers:
            t.join(max(0.0, deadline - time.monotonic()))
        handle.detached = True
        with handle.lock:
            if handle.result is None:
                if not handle.keep_workdir:
                    shutil.rmtree(handle.workdir, ignore_errors=True)
                handle.result = Result(proc.returncode, identifier, reason=handle.kill_reason)
            result = handle.result
        with self._lock:
            self._handles.pop(identifier, None)
        return result

    def kill(self, identifier: str, grace_seconds: float | None = None) -> None:
        """SIGTERM the step's process group, then SIGKILL it after the grace.

        Idempotent; an unknown or finished identifier is a no-op. An
        identifier started by *another* worker process is handled best-effort:
        on Linux the group is signalled only if one of its live processes
        carries the identifier's token in its environment (protection against
        pid reuse); without ``/proc`` the group is signalled unverified.
        """
        grace = self.config.grace_seconds if grace_seconds is None else max(0.0, grace_seconds)
        with self._lock:
            handle = self._handles.get(identifier)
        if handle is None:
            _kill_foreign(identifier, grace)
            return
        pid = handle.proc.pid
        with handle.lock:
            if handle.reaped:
                return
            if handle.kill_reason is None:
                handle.kill_reason = "killed: SIGTERM"
            _killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and not _has_exited(handle.proc):
            time.sleep(_POLL)
        with handle.lock:
            if handle.reaped:
                return
            if not _has_exited(handle.proc):
                handle.kill_reason = f"killed: SIGKILL after {grace:g}s grace"
            _killpg(pid, signal.SIGKILL)

    def preview(self, launch: StepLaunch) -> dict[str, Any]:
        env: dict[str, str | None] = {}
        env.update(launch.full_env(base={}))
        for key, value in launch.env.items():
            if value is None and key not in launch.secrets:
                env[key] = None
        for key in launch.secrets:
            env[key] = MASK
        env[TOKEN_ENV] = "<generated>"
        env[LIFELINE_ENV] = "<worker lifeline fd>"
        masked = {k: (launch.mask(v) if v is not None else None) for k, v in env.items()}
        return {
            "kind": self.kind,
            "command": self._command(),
            "cwd": "<temporary directory>",
            "env": masked,
            "payload": _mask_deep(launch.payload(), launch.mask),
        }

    def close(self) -> None:
        """Nothing to release: running steps keep running until watched or killed."""


# -- process helpers --------------------------------------------------------------


def _pump(stream: IO[str], name: str, sink: LogSink, handle: _Handle) -> None:
    """Forward each line of ``stream`` to ``sink`` until EOF."""
    try:
        for line in stream:
            if handle.detached:
                continue
            try:
                sink(name, line[:-1] if line.endswith("\n") else line)
            except Exception:
                log.exception("log sink failed for %s (%s)", handle.identifier, name)
    except (OSError, ValueError):
        pass
    finally:
        with contextlib.suppress(OSError):
            stream.close()


def _killpg(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _wait_exited(proc: subprocess.Popen[str]) -> None:
    """Block until the child has exited, without reaping it (its pid stays reserved)."""
    if hasattr(os, "waitid"):
        with contextlib.suppress(ChildProcessError):  # already reaped
            os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        return
    proc.wait()  # pragma: no cover - platforms without waitid


def _has_exited(proc: subprocess.Popen[str]) -> bool:
    """Whether the child has exited (it may still be an unreaped zombie)."""
    if proc.returncode is not None:
        return True
    if hasattr(os, "waitid"):
        try:
            return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return True
    return proc.poll() is not None  # pragma: no cover


def _group_members(pgid: int, token: str) -> list[int] | None:
    """Live processes of group ``pgid`` whose environment holds ``token``.

    ``None`` when ``/proc`` is not available (not Linux).
    """
    if not os.path.isdir("/proc/self"):
        return None
    marker = f"{TOKEN_ENV}={token}".encode()
    found: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
            fields = stat[stat.rindex(b")") + 2 :].split()
            state, pgrp = fields[0], int(fields[2])
            if pgrp != pgid or state in (b"Z", b"X"):
                continue
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = f.read().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if marker in environ:
            found.append(int(entry))
    return found


def _kill_foreign(identifier: str, grace: float) -> None:
    """Best-effort kill of a step started by another worker process."""
    parsed = parse_identifier(identifier)
    if parsed is None:
        return
    pgid, token = parsed
    if pgid <= 1 or pgid == os.getpgrp():
        return
    members = _group_members(pgid, token)
    if members is not None and not members:
        return  # gone, or the pid now belongs to something else
    if not _killpg(pgid, signal.SIGTERM):
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        members = _group_members(pgid, token)
        if members is not None and not members:
            return
        if members is None:
            try:
                os.killpg(pgid, 0)
            except (ProcessLookupError, PermissionError):
                return
        time.sleep(_POLL * 2)
    members = _group_members(pgid, token)
    if members is None or members:
        _killpg(pgid, signal.SIGKILL)


def _mask_deep(value: Any, mask: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {k: _mask_deep(v, mask) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_deep(v, mask) for v in value]
    return value

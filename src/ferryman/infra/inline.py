"""The ``inline`` infrastructure: a python step in a thread of the worker.

Fast (no process start-up) and handy for tests and tiny steps, with these
limitations compared to ``process``:

- **No isolation.** The step shares the worker's interpreter, memory,
  ``sys.modules``, ``sys.path`` and working directory; a crash or a blocking
  C call affects the worker. It can reach everything the worker holds: its
  settings and database connections in memory, its files and environment.
  ``ferryman server`` and ``ferryman worker`` remove ferryman's secret
  variables from ``os.environ`` once the settings are read
  (``process_secrets.forget_secret_environ``), which stops accidents, not intent:
  use inline only for code you trust as much as the worker itself.
- **Env is not applied**: ``os.environ`` is global to the process, so
  per-step variables cannot be set safely from a thread. Declared secrets
  reach the step through ``ferryman.secret(name)`` (set for the step's
  thread only), not as variables.
- **Kill cannot stop the step.** Python threads cannot be killed. ``kill``
  marks the attempt *abandoned*: ``watch`` returns at once with
  ``EXIT_KILLED``, the thread's further output and its late result are
  discarded, but the thread keeps running (and occupies a pool slot) until
  the function returns. A step still queued for a free slot is cancelled.
- **Output capture** covers writes to ``sys.stdout``/``sys.stderr`` made by
  the step's own thread (``print``, tracebacks). Threads the step starts
  itself, and logging handlers created earlier that hold a reference to the
  original stream, write to the worker's real output.

The result reaches the sink exactly as with the runtime entry point: a line
``RESULT_MARKER + nonce + " " + json`` on "stdout", so the worker handles both
the same way (``OutputCapture``). Exit codes are the runtime's: 0 success,
1 the function raised or returned a non-JSON value, 2 import failure.
"""

from __future__ import annotations

import logging
import sys
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TextIO

from pydantic import Field

from ferryman.infra.base import (
    EXIT_KILLED,
    EXIT_LOST,
    InfraConfig,
    Infrastructure,
    LogSink,
    Result,
    StepLaunch,
)
from ferryman.runtime.loader import result_line, run_step
from ferryman.runtime.secret import step_secrets

log = logging.getLogger(__name__)


class InlineConfig(InfraConfig):
    """Configuration of the inline infrastructure."""

    max_workers: int = Field(default=8, ge=1)
    """Steps that may run at once (threads of the pool)."""


# -- thread-aware stdout/stderr ---------------------------------------------------


class _LineRoute:
    """Buffers one thread's writes to one stream and emits complete lines."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        self._emit = emit
        self._buf = ""

    def write(self, text: str) -> None:
        self._buf += text
        if "\n" in self._buf:
            *lines, self._buf = self._buf.split("\n")
            for line in lines:
                self._emit(line)

    def flush(self) -> None:
        if self._buf:
            line, self._buf = self._buf, ""
            self._emit(line)


class _StreamProxy:
    """Stands in for ``sys.stdout``/``sys.stderr``.

    Writes from threads registered in ``_routes`` go to their sink; writes
    from any other thread go to the stream that was in place before.
    """

    def __init__(self, original: TextIO | None, name: str) -> None:
        self._ferryman_original = original
        self._ferryman_name = name

    def _route(self) -> _LineRoute | None:
        routes = _routes.get(threading.get_ident())
        return None if routes is None else routes[self._ferryman_name]

    def write(self, text: str) -> int:
        route = self._route()
        if route is None:
            if self._ferryman_original is None:
                return len(text)
            return self._ferryman_original.write(text)
        route.write(text)
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if self._route() is None and self._ferryman_original is not None:
            self._ferryman_original.flush()

    def isatty(self) -> bool:
        original = self._ferryman_original
        return self._route() is None and original is not None and original.isatty()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ferryman_original, name)


_routes: dict[int, dict[str, _LineRoute]] = {}
_routes_lock = threading.Lock()
_STREAMS = ("stdout", "stderr")


def _register(emit: Callable[[str, str], None]) -> None:
    """Route this thread's stdout/stderr writes to ``emit(stream, line)``."""
    with _routes_lock:
        for name in _STREAMS:
            current = getattr(sys, name)
            if not isinstance(current, _StreamProxy):
                setattr(sys, name, _StreamProxy(current, name))
        _routes[threading.get_ident()] = {name: _LineRoute(_bind(emit, name)) for name in _STREAMS}


def _bind(emit: Callable[[str, str], None], name: str) -> Callable[[str], None]:
    def emit_line(line: str) -> None:
        emit(name, line)

    return emit_line


def _unregister() -> None:
    """Flush this thread's partial lines; restore the streams when nobody is routed."""
    with _routes_lock:
        routes = _routes.pop(threading.get_ident(), None)
        if not _routes:
            for name in _STREAMS:
                current = getattr(sys, name)
                if isinstance(current, _StreamProxy):
                    setattr(sys, name, current._ferryman_original)
    if routes is not None:
        for route in routes.values():
            route.flush()


# -- the infrastructure -------------------------------------------------------------


@dataclass
class _Task:
    identifier: str
    nonce: str
    sink: LogSink
    lock: threading.Lock = field(default_factory=threading.Lock)
    finished: threading.Event = field(default_factory=threading.Event)
    abandoned: bool = False
    completed: bool = False
    code: int = EXIT_LOST
    future: Future[None] | None = None

    def emit(self, stream: str, line: str) -> None:
        """Forward a line of the step's output (never raises into the step's code)."""
        if self.abandoned:
            return
        try:
            self.sink(stream, line)
        except Exception:
            log.exception("log sink failed for %s (%s)", self.identifier, stream)


class InlineInfrastructure(Infrastructure):
    """Run python steps in a thread pool of the worker process (see module docs)."""

    kind = "inline"
    config_model = InlineConfig
    kinds = frozenset({"python"})
    records_identifier = False  # a thread of this process: nobody else can kill it
    kill_signals = False  # a thread cannot be stopped: kill abandons it
    applies_env = False  # os.environ is the worker's, shared by every thread
    config: InlineConfig

    def __init__(self, config: InlineConfig | None = None) -> None:
        super().__init__(config)
        self._pool = ThreadPoolExecutor(
            max_workers=self.config.max_workers, thread_name_prefix="ferryman-inline"
        )
        self._tasks: dict[str, _Task] = {}
        self._lock = threading.Lock()

    def start(self, launch: StepLaunch, sink: LogSink) -> str:
        identifier = f"inline:{uuid.uuid4()}"
        task = _Task(identifier, launch.nonce, sink)
        payload = launch.payload()
        with self._lock:
            self._tasks[identifier] = task
        task.future = self._pool.submit(self._run, task, payload, dict(launch.secrets))
        return identifier

    @staticmethod
    def _run(task: _Task, payload: dict[str, Any], secrets: dict[str, str]) -> None:
        code = EXIT_LOST
        outcome = ""
        _register(task.emit)
        try:

            def write_stderr(text: str) -> None:
                for line in text.rstrip("\n").split("\n"):
                    task.emit("stderr", line)

            with step_secrets(secrets):
                outcome, code = run_step(
                    payload["function"],
                    payload["inputs"],
                    payload["sys_path"],
                    write_stderr,
                    max_output_bytes=payload.get("max_output_bytes"),
                )
        finally:
            _unregister()
            with task.lock:
                if not task.abandoned:
                    if outcome:
                        task.sink("stdout", result_line(task.nonce, outcome))
                    task.code = code
                    task.completed = True
                    task.finished.set()

    def watch(self, identifier: str) -> Result:
        with self._lock:
            task = self._tasks.get(identifier)
        if task is None:
            return Result(EXIT_LOST, identifier, reason="unknown inline step")
        task.finished.wait()
        with self._lock:
            self._tasks.pop(identifier, None)
        if task.abandoned:
            return Result(
                EXIT_KILLED,
                identifier,
                reason="killed: the inline step's thread was abandoned (threads cannot be killed)",
            )
        return Result(task.code, identifier)

    def kill(self, identifier: str, grace_seconds: float = 0.0) -> None:
        """Abandon the step: ``watch`` returns ``EXIT_KILLED`` now, its thread runs on.

        A thread cannot be killed; its later output and result are discarded.
        A step still waiting for a free thread is cancelled. Idempotent;
        unknown or finished identifiers are a no-op.
        """
        with self._lock:
            task = self._tasks.get(identifier)
        if task is None:
            return
        with task.lock:
            if task.completed or task.abandoned:
                return
            task.abandoned = True
            task.finished.set()
        if task.future is not None:
            task.future.cancel()

    def preview(self, launch: StepLaunch) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "function": launch.payload()["function"],
            "inputs": _mask_deep(launch.inputs, launch.mask),
        }

    def close(self, wait: bool = False) -> None:
        """Stop accepting steps; cancel queued ones (running threads finish on their own)."""
        self._pool.shutdown(wait=wait, cancel_futures=True)


def _mask_deep(value: Any, mask: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {k: _mask_deep(v, mask) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_deep(v, mask) for v in value]
    return value

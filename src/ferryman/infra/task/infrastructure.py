"""The ``task`` infrastructure: every ``task`` step runs here, on one asyncio
event loop in a thread of the worker, through the plugin of its task type.

For the worker it is an infrastructure like the others: ``start`` returns the
identifier ``task:<idempotency key>`` at once (the worker records it),
``watch`` blocks until the attempt ends, ``kill`` deletes the remote resource
(the request is stored first, so a restart still deletes it), and ``attach``
lets a worker that adopts the step of a lost one go on from the stored
resource meta, without a second ``create``. The outcome is read by the
``task`` step kind from the result line the driver writes.

What must outlive a worker is in the ``TaskState`` bound by the worker
(``bind``): the database's, shared by all workers; ``MemoryTaskState`` when
none is bound.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any

from pydantic import Field, ValidationError

from ferryman.domain.steps import TaskStep
from ferryman.infra.base import (
    EXIT_LOST,
    TASK_STATE,
    InfraConfig,
    Infrastructure,
    LogSink,
    Result,
    StepLaunch,
)
from ferryman.infra.container import TemplateError, render
from ferryman.infra.task.driver import Driver, PluginRuntime
from ferryman.plugins.base import AsyncPlugin, Plugin, PluginHost, TaskContext
from ferryman.plugins.limits import PluginLimits
from ferryman.plugins.registry import PluginError, PluginRegistry
from ferryman.plugins.state import MemoryTaskState, StoredResource, TaskState

log = logging.getLogger(__name__)
PREFIX = "task:"
#: The keys ``bind`` takes the shared state and the destination policy from.
STATE_KEY = TASK_STATE
POLICY_KEY = "http_policy"


class TaskInfraConfig(InfraConfig):
    """Settings of the ``task`` infrastructure: the limits of each plugin by id."""

    plugins: dict[str, PluginLimits] = Field(default_factory=dict)
    #: Seconds between two looks for pending deletes and counter flushes.
    reap_interval: float = Field(default=2.0, gt=0)


def attempt_key(run_id: str, node: str, attempt: int) -> str:
    """The idempotency key of one attempt (stable across workers)."""
    return f"ferryman-{run_id}-{node}-{attempt}"


def _render(value: Any, launch: StepLaunch) -> Any:
    if isinstance(value, str):
        return render(value, launch)
    if isinstance(value, dict):
        return {k: _render(v, launch) for k, v in value.items()}
    if isinstance(value, list):
        return [_render(v, launch) for v in value]
    return value


class TaskInfrastructure(Infrastructure):
    """Runs ``task`` steps through plugins (module docstring)."""

    kind = "task"
    config_model = TaskInfraConfig
    kinds = frozenset({"task"})
    reattachable = True

    def __init__(
        self, config: InfraConfig | None = None, *, registry: PluginRegistry | None = None
    ) -> None:
        super().__init__(config)
        assert isinstance(self.config, TaskInfraConfig)
        self.cfg: TaskInfraConfig = self.config
        self.registry = registry or PluginRegistry()
        self.state: TaskState = MemoryTaskState()
        self.host = PluginHost()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._thread: threading.Thread | None = None
        self._runtimes: dict[str, PluginRuntime] = {}
        self._running: dict[str, tuple[Driver, Future[tuple[int, str | None]]]] = {}

    # -- set-up --------------------------------------------------------------------

    def bind(self, context: Mapping[str, Any]) -> None:
        state = context.get(STATE_KEY)
        if state is not None:
            self.state = state
        self.host = PluginHost(http_policy=context.get(POLICY_KEY))

    def limits(self, plugin_id: str) -> PluginLimits:
        return self.cfg.plugins.get(plugin_id) or PluginLimits()

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._closed:
                raise RuntimeError("the task infrastructure is closed")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=loop.run_forever, name="ferryman-tasks", daemon=True
                )
                self._thread.start()
                self._loop = loop
                asyncio.run_coroutine_threadsafe(self._reaper(), loop)
            return self._loop

    def _submit(self, coro: Any) -> Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self._ensure_loop())

    async def _runtime(self, cls: type[Plugin]) -> PluginRuntime:
        rt = self._runtimes.get(cls.id)
        if rt is None:
            rt = PluginRuntime.make(cls(self.host), self.limits(cls.id), self.state)
            self._runtimes[cls.id] = rt
        return rt

    # -- the interface --------------------------------------------------------------

    def start(self, launch: StepLaunch, sink: LogSink) -> str:
        step = launch.step
        if not isinstance(step, TaskStep):
            raise ValueError(f"step {launch.node!r} is not a task step")
        cls = self.registry.for_task(step.type, step.plugin)
        try:
            rendered = _render(step.config, launch)
        except TemplateError as exc:
            raise ValueError(f"config: {exc}") from None
        try:
            config = cls.config_model.model_validate(rendered)
        except ValidationError as exc:
            raise ValueError(f"config of plugin {cls.id!r}: {_problems(exc)}") from None
        key = attempt_key(launch.run_id, launch.node, launch.attempt)
        context = {
            "plugin": cls.id, "run_id": launch.run_id, "step": launch.node,
            "attempt": launch.attempt, "namespace": launch.namespace,
            "pipeline": launch.pipeline, "task_type": step.type, "config": rendered,
            "secrets": sorted(launch.secrets), "nonce": launch.nonce,
        }  # fmt: skip
        ctx = self._context(context, config, dict(launch.secrets), launch.inputs, launch.params)
        self._begin(key, cls, ctx, sink, launch.nonce, context, adopted=False)
        return PREFIX + key

    def _context(
        self, c: dict[str, Any], config: Any, secrets: dict[str, str],
        inputs: dict[str, Any], params: dict[str, Any],
    ) -> TaskContext:  # fmt: skip
        return TaskContext(
            run_id=c["run_id"], step=c["step"], attempt=c["attempt"], namespace=c["namespace"],
            pipeline=c["pipeline"], task_type=c["task_type"],
            idempotency_key=attempt_key(c["run_id"], c["step"], c["attempt"]),
            config=config, secrets=secrets, inputs=inputs, params=params,
        )  # fmt: skip

    def _begin(
        self, key: str, cls: type[Plugin], ctx: TaskContext, sink: LogSink, nonce: str,
        context: dict[str, Any], *, adopted: bool,
    ) -> None:  # fmt: skip
        async def go() -> tuple[int, str | None]:
            rt = await self._runtime(cls)
            driver = Driver(rt, ctx, key, sink, nonce, context, adopted=adopted)
            holder[0] = driver
            if cancelled.is_set():
                driver.cancel.set()
            return await driver.run()

        holder: list[Driver | None] = [None]
        cancelled = threading.Event()
        fut: Future[tuple[int, str | None]] = self._submit(go())
        self._running[key] = (_Pending(holder, cancelled), fut)  # type: ignore[assignment]

    def watch(self, identifier: str) -> Result:
        key = identifier.removeprefix(PREFIX)
        entry = self._running.get(key)
        if entry is None:
            return Result(EXIT_LOST, identifier, "no such task attempt in this worker")
        code, reason = entry[1].result()
        self._running.pop(key, None)
        return Result(code, identifier, reason)

    def kill(self, identifier: str, grace_seconds: float) -> None:
        if not identifier.startswith(PREFIX):
            return
        key = identifier.removeprefix(PREFIX)
        # Stored first: if this worker dies now, a reaper still deletes.
        self.state.request_delete(key, "cancelled")
        entry = self._running.get(key)
        if entry is not None and not self._closed:
            pending: Any = entry[0]
            pending.cancel(self._ensure_loop())

    def _stored_context(self, stored: StoredResource) -> tuple[type[Plugin], TaskContext]:
        """The plugin and context of a stored attempt (``PluginError`` if gone)."""
        c = stored.context or {}
        try:
            cls = self.registry.plugin_class(c["plugin"])
            config = cls.config_model.model_validate(c["config"])
        except (ValidationError, KeyError) as exc:
            raise PluginError(f"stored context of {stored.key}: {exc}") from None
        # Secrets are never stored: read again from this worker's environment.
        secrets = {n: os.environ[n] for n in c.get("secrets", []) if n in os.environ}
        return cls, self._context(c, config, secrets, {}, {})

    def attach(self, identifier: str, sink: LogSink, since: Any = None) -> bool:
        key = identifier.removeprefix(PREFIX)
        stored = self.state.resource(key)
        if stored is None or stored.done or stored.context is None:
            return False
        try:
            cls, ctx = self._stored_context(stored)
        except PluginError as exc:
            log.warning("cannot adopt %s: %s", identifier, exc)
            return False
        c = stored.context
        self._begin(key, cls, ctx, sink, str(c.get("nonce", "")), c, adopted=True)
        return True

    def preview(self, launch: StepLaunch) -> dict[str, Any]:
        step = launch.step
        assert isinstance(step, TaskStep)
        cls = self.registry.for_task(step.type, step.plugin)
        rendered = launch.mask.value(_render(step.config, launch))
        return {
            "plugin": cls.id,
            "task_type": step.type,
            "config": rendered,
            "idempotency_key": attempt_key(launch.run_id, launch.node, launch.attempt),
            "limits": json.loads(self.limits(cls.id).model_dump_json()),
        }

    def close(self) -> None:
        with self._lock:
            self._closed = True
            loop = self._loop
        if loop is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=10)
        except Exception:  # closing must not raise
            log.debug("task infrastructure: closing plugins failed", exc_info=True)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        if not loop.is_running():
            loop.close()
        self._loop = None

    async def _shutdown(self) -> None:
        me = asyncio.current_task()
        for task in asyncio.all_tasks():
            if task is not me:
                task.cancel()  # the reaper, and drivers of attempts nobody waits for
        await self._flush_counters()
        for rt in self._runtimes.values():
            await rt.plugin.close()

    # -- background: pending deletes and counters ----------------------------------------

    async def _reaper(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.reap_interval)
            try:
                await self._flush_counters()
                await self._reap()
            except Exception as exc:  # the database may be away: next time
                log.warning("task infrastructure: %s", exc)

    async def _flush_counters(self) -> None:
        for rt in self._runtimes.values():
            counts = {k: n for k, n in rt.counters.items() if n}
            for name, n in counts.items():
                rt.counters[name] -= n  # in place: the limiters' callbacks hold this dict
            for name, n in counts.items():
                await asyncio.to_thread(self.state.count, rt.plugin.id, name, n)

    async def _reap(self) -> None:
        pending = await asyncio.to_thread(self.state.pending_deletes, 50)
        for r in pending:
            if r.key in self._running:
                continue  # its own driver is deleting it
            try:
                cls, ctx = self._stored_context(r)
                rt = await self._runtime(cls)
                plugin = rt.plugin
                if r.meta is not None and isinstance(plugin, AsyncPlugin):
                    await rt.write.acquire()
                    rt.count("deletes")
                    reason = r.delete_reason or "cancelled"
                    await asyncio.wait_for(
                        plugin.delete(r.meta, reason, ctx), rt.limits.call_timeout
                    )
                await asyncio.to_thread(self.state.finish, r.key)
            except Exception as exc:  # tried again next time
                log.warning("task %s: delete failed: %s", r.key, exc)


class _Pending:
    """A driver not made yet (it is made in the loop) and its cancel request."""

    def __init__(self, holder: list[Driver | None], cancelled: threading.Event) -> None:
        self.holder, self.cancelled = holder, cancelled

    def cancel(self, loop: asyncio.AbstractEventLoop) -> None:
        self.cancelled.set()
        driver = self.holder[0]
        if driver is not None:
            loop.call_soon_threadsafe(driver.cancel.set)


def _problems(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()
    )

"""Driving one attempt of a task step through its plugin (in the
infrastructure's event loop): quota, create (or adopt), follow, delete.

Every remote call goes through ``Driver.call``: the right rate limiter, the
per-call timeout, and retries of system failures with backoff. The
consecutive-failure count is per attempt and starts over after any call that
succeeds; past ``max_system_failures`` the attempt fails. System failures
never use the step's own retries.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ferryman.infra.base import EXIT_KILLED, RESULT_MARKER, LogSink
from ferryman.plugins.base import (
    AsyncPlugin,
    Phase,
    PhaseState,
    Plugin,
    SyncPlugin,
    SystemFailure,
    TaskContext,
    UserFailure,
)
from ferryman.plugins.limits import PluginLimits, SharedRateLimiter, backoff
from ferryman.plugins.state import TaskState

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Exit codes of a task attempt (the ``task`` kind reads them with the reason).
EXIT_OK = 0
EXIT_FAILED = 1


class Cancelled(Exception):
    """The attempt was asked to stop while waiting."""


@dataclass
class PluginRuntime:
    """One plugin instance and what limits it, shared by its attempts in a worker."""

    plugin: Plugin
    limits: PluginLimits
    state: TaskState
    read: SharedRateLimiter
    write: SharedRateLimiter
    resync: asyncio.Semaphore
    counters: dict[str, int] = field(default_factory=dict)
    #: One waiter per quota key polls the database; the others queue here.
    quota_locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    @classmethod
    def make(cls, plugin: Plugin, limits: PluginLimits, state: TaskState) -> PluginRuntime:
        counters: dict[str, int] = {}

        def throttled() -> None:
            counters["throttled_waits"] = counters.get("throttled_waits", 0) + 1

        pid = plugin.id
        return cls(
            plugin,
            limits,
            state,
            SharedRateLimiter(state, f"{pid}:read", limits.read_qps, limits.read_burst,
                              on_throttled=throttled),
            SharedRateLimiter(state, f"{pid}:write", limits.write_qps, limits.write_burst,
                              on_throttled=throttled),
            asyncio.Semaphore(limits.resync_workers),
            counters,
        )  # fmt: skip


@dataclass
class Driver:
    """One attempt: ``run()`` returns ``(exit code, reason)``."""

    rt: PluginRuntime
    ctx: TaskContext
    key: str
    sink: LogSink
    nonce: str
    context: dict[str, Any]
    adopted: bool = False
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    failures: int = 0

    # -- helpers -----------------------------------------------------------------

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(fn, *args)

    async def call(self, what: str, make: Callable[[], Awaitable[T]], *, write: bool) -> T:
        """One remote call, limited, timed and retried on system failures."""
        limits = self.rt.limits
        while True:
            await (self.rt.write if write else self.rt.read).acquire()
            self.rt.count(f"{what}s")
            try:
                result = await asyncio.wait_for(make(), limits.call_timeout)
            except SystemFailure as exc:
                why, after = str(exc), exc.retry_after
            except TimeoutError:
                why, after = f"{what} timed out after {limits.call_timeout:g}s", None
            else:
                self.failures = 0  # any success starts the count over
                return result
            self.failures += 1
            self.rt.count("system_failures")
            if self.failures >= limits.max_system_failures:
                raise UserFailure(f"{self.failures} consecutive system failures; last: {why}")
            delay = backoff(self.failures, limits, after)
            self._log(f"{what}: {why}; retrying in {delay:.1f}s")
            if what != "delete" and await self._cancelled_within(delay):
                raise Cancelled
            if what == "delete":
                await asyncio.sleep(delay)

    async def _cancelled_within(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self.cancel.wait(), seconds)
        except TimeoutError:
            return False
        return True

    def _log(self, line: str) -> None:
        self.sink("stderr", f"[{self.rt.plugin.id}] {line}")

    def _result(self, outputs: Any) -> tuple[int, str | None]:
        line = json.dumps({"ok": True, "value": outputs}, separators=(",", ":"), default=str)
        self.sink("stdout", RESULT_MARKER + self.nonce + " " + line)
        return EXIT_OK, None

    # -- the attempt -----------------------------------------------------------------

    async def run(self) -> tuple[int, str | None]:
        try:
            if isinstance(self.rt.plugin, SyncPlugin):
                return await self._sync(self.rt.plugin)
            assert isinstance(self.rt.plugin, AsyncPlugin)
            return await self._async(self.rt.plugin)
        except Cancelled:
            return EXIT_KILLED, "cancelled"
        except UserFailure as exc:
            return EXIT_FAILED, str(exc) or "the remote refused the task"
        finally:
            await self._db(self.rt.state.quota_release, self.key)

    async def _sync(self, plugin: SyncPlugin) -> tuple[int, str | None]:
        try:
            await self._quota()
            out = await self.call("do", lambda: plugin.do(self.ctx), write=True)
        finally:  # the row a quota wait made (if any) needs nothing more
            await self._db(self.rt.state.finish, self.key)
        return self._result(out)

    async def _quota(self) -> None:
        """Wait for a place in the namespace's quota (shown while waiting).

        In a worker, one waiter per quota key asks the database (with a
        backoff up to 1 s); the others wait their turn in line, so a thousand
        waiting steps cost one query per second, not a thousand."""
        limits, state = self.rt.limits, self.rt.state
        qkey = f"{self.rt.plugin.id}:{self.ctx.namespace}"
        held, in_use = await self._db(state.quota_acquire, qkey, limits.max_concurrent, self.key)
        if held:
            return
        message = f"waiting for quota {qkey} ({in_use} in use of {limits.max_concurrent})"
        self._log(message)
        self.rt.count("quota_waits")
        ctx = self.ctx
        # the attempt's row holds the message the run's view shows (kept if there)
        await self._db(
            state.begin_resource, self.key, self.rt.plugin.id, ctx.run_id, ctx.step,
            ctx.attempt, self.context,
        )  # fmt: skip
        data = {"reason": "quota", "key": qkey, "in_use": in_use, "limit": limits.max_concurrent}
        await self._db(state.waiting, self.key, ctx.run_id, ctx.step, ctx.attempt, message, data)
        started = asyncio.get_running_loop().time()
        lock = self.rt.quota_locks.setdefault(qkey, asyncio.Lock())
        await self._wait_for_turn(lock, started)
        try:
            delay = 0.05
            while True:
                held, _ = await self._db(state.quota_acquire, qkey, limits.max_concurrent, self.key)
                if held:
                    await self._db(state.note, self.key, "")
                    return
                self._check_queue_timeout(started, qkey)
                if await self._cancelled_within(delay):
                    raise Cancelled
                delay = min(delay * 1.5, 1.0)
        finally:
            lock.release()

    async def _wait_for_turn(self, lock: asyncio.Lock, started: float) -> None:
        """Acquire ``lock``, unless the attempt is cancelled or times out first."""
        take = asyncio.ensure_future(lock.acquire())
        stop = asyncio.ensure_future(self.cancel.wait())
        timeout = self.rt.limits.quota_queue_timeout
        try:
            done, _ = await asyncio.wait(
                {take, stop}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stop.cancel()
        if take in done:
            if self.cancel.is_set():
                lock.release()
                raise Cancelled
            return
        take.cancel()
        if take.done() and not take.cancelled() and lock.locked():
            lock.release()  # acquired just as we gave up
        if self.cancel.is_set():
            raise Cancelled
        self._check_queue_timeout(started, "", force=True)

    def _check_queue_timeout(self, started: float, qkey: str, *, force: bool = False) -> None:
        timeout = self.rt.limits.quota_queue_timeout
        waited = asyncio.get_running_loop().time() - started
        if timeout is not None and (force or waited >= timeout):
            key = qkey or f"{self.rt.plugin.id}:{self.ctx.namespace}"
            raise UserFailure(f"waited {waited:.0f}s for quota {key}: gave up")

    async def _async(self, plugin: AsyncPlugin) -> tuple[int, str | None]:
        state = self.rt.state
        stored = await self._db(state.resource, self.key)
        meta = stored.meta if stored is not None else None
        if stored is not None and stored.delete_reason == "failed":
            # the lost worker failed the attempt and was deleting the job: finish that
            await self._delete(plugin, meta, "failed")
            return EXIT_FAILED, "the remote job could not be followed; it was deleted"
        if stored is not None and stored.delete_reason:
            self.cancel.set()
        resource: Any = None
        if meta is None and not self.cancel.is_set():
            await self._quota()
            await self._db(
                state.begin_resource, self.key, plugin.id, self.ctx.run_id, self.ctx.step,
                self.ctx.attempt, self.context,
            )  # fmt: skip
            meta, resource = await self.call("create", lambda: plugin.create(self.ctx), write=True)
            await self._db(state.save_meta, self.key, meta)
        elif meta is not None:
            await self._quota()  # held already when adopted: taken again at once
        while True:
            if self.cancel.is_set():
                return await self._delete(plugin, meta)
            if resource is None:
                if await self._cancelled_within(self.rt.limits.resync_interval):
                    continue
                resource = await self._get(plugin, meta)
            phase: Phase = plugin.status(self.ctx, resource)
            resource = None
            if not phase.terminal:
                continue
            await self._db(state.finish, self.key)
            if phase.state == PhaseState.SUCCEEDED:
                return self._result(phase.outputs)
            prefix = "retryable failure: " if phase.state == PhaseState.RETRYABLE_FAILURE else ""
            return EXIT_FAILED, prefix + (phase.message or f"the remote task {phase.state}")

    async def _get(self, plugin: AsyncPlugin, meta: Any) -> Any:
        """Read the resource; if that fails for good (too many system
        failures, a refusal) the attempt fails, and the remote job, which
        may still be running, is deleted first (durably, as on cancel)."""
        try:
            async with self.rt.resync:
                return await self.call("get", lambda: plugin.get(meta, self.ctx), write=False)
        except UserFailure:
            self.failures = 0  # the delete gets its own count
            await self._delete(plugin, meta, "failed")
            raise

    async def _delete(
        self, plugin: AsyncPlugin, meta: Any, reason: str = "cancelled"
    ) -> tuple[int, str | None]:
        """Delete the resource (the request is stored: a restart still deletes)."""
        state = self.rt.state
        await self._db(state.request_delete, self.key, reason)
        if meta is not None:
            try:
                await self.call("delete", lambda: plugin.delete(meta, reason, self.ctx), write=True)
            except UserFailure as exc:  # stays pending: the reaper tries again
                self._log(f"delete failed: {exc}")
                return EXIT_KILLED, "cancelled"
        await self._db(state.finish, self.key)
        return EXIT_KILLED, "cancelled"

"""The loop base: what every long-running loop of ferryman shares.

A loop does its work in **turns** and sleeps between them. The base owns
the lifecycle around the turns, so a loop only says what a turn does, when
it has something due and what it has in flight:

- ``run()`` serves until ``stop()``; ``run_until_idle(timeout)`` serves until
  the loop reports itself ``idle()`` (drain mode, for the CLI and tests) and
  raises ``TimeoutError`` after ``timeout`` seconds.
- **Wake-ups.** A loop names its store ``channels``; the store calls the
  loop's wake-up for every notification on them, from this process at once
  and from others through the store's one shared ``LISTEN`` connection on
  PostgreSQL (``store/listener.py``). Other threads of the loop (an attempt
  that finished) call ``wake()``. The wake-up flag is cleared *before* each
  turn and the sleep ends as soon as it is set, so a wake-up that arrives
  during a turn or between the turn and the sleep is never lost. A loop's own
  commits do not wake it: what they made was seen by the turn that made it.
- **Sleep.** Until the earliest of: a wake-up, ``next_wait()`` (the next due
  time the loop knows of, ``next_due``, or ``poll_seconds``, the fallback
  poll), the drain's timeout. ``min_turn_interval`` spaces turns out after a
  wake-up (a storm of them costs one turn per interval).
- **Failures.** A turn that raises is logged in one line (no traceback) and
  retried with exponential backoff (``retry_first`` … ``retry_max``); a loop
  says which errors are its to retry (``retryable``); the others end ``run``
  (its supervisor restarts the loop).
- **Shutdown** (``close()``, at the end of ``run``): no new work is taken
  (``stopping``), turns go on for up to ``grace_seconds`` while work is
  ``in_flight()`` so it can finish and be recorded, then ``abort()`` stops
  what is left and turns go on for up to ``abort_seconds`` to record that;
  then ``finish()`` and ``release()``.
- **Time** comes from an injectable ``Clock`` (``engine/clock.py``).

Two flavours share all of this: ``Loop`` (a thread; the worker, the
callback sender) and ``AsyncLoop`` (an asyncio event loop run inside the
loop's thread; the event deliverer), whose hooks are coroutines.
``engine/supervisor.py`` runs loops in threads and restarts them after a
crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, ClassVar

from ferryman.engine.clock import Clock
from ferryman.store.engine import describe_unavailable, is_unavailable

if TYPE_CHECKING:
    from ferryman.store.engine import Store


def describe_error(exc: BaseException) -> str:
    """One short line about a failed turn: no traceback, no SQL, no parameters."""
    if is_unavailable(exc):
        return f"database unavailable ({describe_unavailable(exc)})"
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


class LoopCore:
    """What both flavours share: settings, the stop flag, failure accounting
    and the sleep's length. Not used alone: see ``Loop`` and ``AsyncLoop``."""

    name: ClassVar[str] = "loop"  # in log lines and errors
    channels: ClassVar[tuple[str, ...]] = ()  # the store channels that wake it
    min_turn_interval: ClassVar[float] = 0.0
    abort_seconds: ClassVar[float] = 0.0
    retry_first: ClassVar[float] = 0.2
    retry_max: float = 5.0  # a loop may lower it per instance (the worker: a heartbeat)
    settle_interval: ClassVar[float] = 0.05  # between turns while shutting down

    def __init__(
        self,
        store: Store,
        *,
        poll_seconds: float,
        grace_seconds: float,
        clock: Clock | None = None,
    ) -> None:
        self.store = store
        self.poll_seconds = poll_seconds
        self.grace_seconds = grace_seconds
        self.clock = clock or Clock()
        self.log = logging.getLogger(type(self).__module__)
        self.next_due: float | None = None  # monotonic time something is due
        self.draining = False  # serving in drain mode (``run_until_idle``)
        self.failures = 0  # turns failed in a row
        self._stop = threading.Event()
        self._closed = False

    @property
    def stopping(self) -> bool:
        """Whether the loop was told to stop: take no new work."""
        return self._stop.is_set()

    # -- hooks ----------------------------------------------------------------------

    def next_wait(self) -> float:
        """Seconds the loop may sleep: until ``next_due``, at most ``poll_seconds``.
        Loops with more to wait for (or nothing: 0) override it."""
        if self.next_due is None:
            return self.poll_seconds
        return min(self.poll_seconds, self.next_due - self.clock.monotonic())

    def in_flight(self) -> bool:
        """Whether work started by a turn has not ended yet (shutdown waits on it)."""
        return False

    def retryable(self, exc: Exception) -> bool:
        """Whether a turn failing with ``exc`` is retried (else ``run`` ends)."""
        return True

    def turn_failed(self, exc: Exception) -> None:
        """Called after a retryable failure, before the backoff."""

    # -- shared mechanics -----------------------------------------------------------

    def _failed(self, exc: Exception, *, quiet: bool = False) -> float:
        """Count and log a failed turn; returns the backoff before the next one."""
        self.failures += 1
        delay: float = min(self.retry_first * 2.0 ** (self.failures - 1), self.retry_max)
        level = logging.DEBUG if quiet and self.failures > 1 else logging.WARNING
        self.log.log(level, "%s: turn failed: %s; retrying in %.1fs",
                     self.name, describe_error(exc), delay)  # fmt: skip
        self.turn_failed(exc)
        return delay

    def _sleep_for(self, deadline: float | None) -> float:
        wait = self.next_wait()
        if deadline is not None:
            wait = min(wait, deadline - self.clock.monotonic())
        return wait

    def _deadline(self, timeout: float | None) -> float | None:
        return None if timeout is None else self.clock.monotonic() + timeout

    def _check_deadline(self, deadline: float | None, timeout: float | None) -> None:
        if deadline is not None and self.clock.monotonic() >= deadline:
            raise TimeoutError(f"the {self.name} was not idle within {timeout:g}s")


class Loop(LoopCore):
    """A loop in a thread (see the module docstring). Subclasses implement
    ``turn()`` and, as needed, ``idle()``, ``next_wait()``, ``in_flight()``,
    ``begin()``, ``abort()``, ``finish()`` and ``release()``."""

    def __init__(
        self,
        store: Store,
        *,
        poll_seconds: float,
        grace_seconds: float,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(store, poll_seconds=poll_seconds, grace_seconds=grace_seconds, clock=clock)
        self._woken = threading.Event()
        self._ident: int | None = None  # the thread serving the loop

    # -- hooks ----------------------------------------------------------------------

    def turn(self) -> object:
        """One round of work."""
        raise NotImplementedError

    def idle(self) -> bool:
        """Drain mode: whether nothing is left to do (asked after each turn)."""
        return not self.in_flight()

    def begin(self) -> None:
        """Before the first turn (in the loop's thread)."""

    def abort(self) -> None:
        """The grace is over: stop what is still in flight."""

    def finish(self) -> None:
        """After the last turn of a shutdown (may use the database)."""

    def release(self) -> None:
        """Free what the loop holds (pools, clients); always called, last."""

    # -- lifecycle ------------------------------------------------------------------

    def run(self) -> None:
        """Serve until ``stop()`` is called."""
        self._serve(drain=False, timeout=None)

    def run_until_idle(self, timeout: float | None = 30.0) -> None:
        """Serve until ``idle()``; ``TimeoutError`` after ``timeout`` seconds."""
        self._serve(drain=True, timeout=timeout)

    def stop(self) -> None:
        """Ask the loop to stop (returns at once); in-flight work gets ``grace_seconds``."""
        self._stop.set()
        self._woken.set()

    def wake(self) -> None:
        """Make the loop turn soon (from any thread)."""
        self._woken.set()

    def _notified(self) -> None:
        # The store's wake-up. Not for this thread's own commits: the turn
        # that committed them has already seen what they made.
        if threading.get_ident() != self._ident:
            self._woken.set()

    def _serve(self, *, drain: bool, timeout: float | None) -> None:
        self.draining = drain
        self._ident = threading.get_ident()
        if self.channels:
            self.store.subscribe(self.channels, self._notified)
        deadline = self._deadline(timeout)
        try:
            self.begin()
            while not self.stopping:
                self._woken.clear()  # before the turn: a wake-up during it is kept
                ok = self._safe(self.turn)
                if ok and drain:
                    idle = self._safe(self.idle, value=True)
                    if idle is True:
                        return
                    ok = idle is not None
                self._check_deadline(deadline, timeout)
                if ok:
                    self._sleep(deadline)
        finally:
            self.close()

    def _safe(
        self, fn: Callable[[], object], *, value: bool = False, quiet: bool = False
    ) -> bool | None:
        """Call ``fn``; on a retryable error log it, back off and return None.
        Returns True (or ``fn``'s result with ``value``) otherwise."""
        try:
            result = fn()
        except Exception as exc:
            if not self.retryable(exc):
                raise
            delay = self._failed(exc, quiet=quiet)
            self.clock.wait(self._stop, delay)  # wake-ups do not shorten a backoff
            return None
        self.failures = 0
        return bool(result) if value else True

    def _sleep(self, deadline: float | None) -> None:
        wait = self._sleep_for(deadline)
        if wait > 0 and self.clock.wait(self._woken, wait) and self.min_turn_interval > 0:
            self.clock.wait(self._stop, self.min_turn_interval)

    def close(self) -> None:
        """Shut down (see the module docstring) and release everything; at the
        end of ``run``, or by whoever drove the loop with ``turn()`` alone."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        try:
            self._settle(self.grace_seconds, give_up_after=None)
            if self.in_flight():
                self.abort()
                self._settle(self.abort_seconds, give_up_after=3)
            self.finish()
        finally:
            self.store.unsubscribe(self._notified)
            self.release()

    def _settle(self, seconds: float, give_up_after: int | None) -> None:
        end = self.clock.monotonic() + seconds
        while self.in_flight() and self.clock.monotonic() < end:
            self._woken.clear()
            try:
                ok = self._safe(self.turn, quiet=True)
            except Exception:  # nothing may keep the shutdown from stopping what runs
                self.log.exception("%s: turn failed while shutting down", self.name)
                return
            if ok is None and give_up_after is not None and self.failures > give_up_after:
                return
            self.clock.wait(self._woken, self.settle_interval)


class AsyncLoop(LoopCore):
    """A loop whose turns run on an asyncio event loop inside the loop's
    thread: the same lifecycle and wake-ups as ``Loop``, with coroutine hooks
    (``turn``, ``idle``, ``begin``, ``abort``, ``finish``, ``release``).
    Database work belongs in ``asyncio.to_thread``: the event loop must never
    block on a lock."""

    def __init__(
        self,
        store: Store,
        *,
        poll_seconds: float,
        grace_seconds: float,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(store, poll_seconds=poll_seconds, grace_seconds=grace_seconds, clock=clock)
        self._aloop: asyncio.AbstractEventLoop | None = None
        self._kick: asyncio.Event | None = None
        self._ident: int | None = None

    # -- hooks ----------------------------------------------------------------------

    async def turn(self) -> object:
        """One round of work."""
        raise NotImplementedError

    async def idle(self) -> bool:
        """Drain mode: whether nothing is left to do (asked after each turn)."""
        return not self.in_flight()

    async def begin(self) -> None:
        """Before the first turn (in the event loop)."""

    async def abort(self) -> None:
        """The grace is over: stop what is still in flight."""

    async def finish(self) -> None:
        """After the last turn of a shutdown."""

    async def release(self) -> None:
        """Free what the loop holds; always called, last."""

    # -- lifecycle ------------------------------------------------------------------

    def run(self) -> None:
        """Serve until ``stop()`` is called."""
        asyncio.run(self._serve(drain=False, timeout=None))

    def run_until_idle(self, timeout: float | None = 30.0) -> None:
        """Serve until ``idle()``; ``TimeoutError`` after ``timeout`` seconds."""
        asyncio.run(self._serve(drain=True, timeout=timeout))

    def stop(self) -> None:
        """Ask the loop to stop (returns at once); in-flight work gets ``grace_seconds``."""
        self._stop.set()
        self.wake()

    def wake(self) -> None:
        """Make the loop turn soon (from any thread, or from its own tasks)."""
        aloop, kick = self._aloop, self._kick
        if aloop is None or kick is None:
            return
        if threading.get_ident() == self._ident:
            kick.set()
            return
        with contextlib.suppress(RuntimeError):  # the event loop has closed meanwhile
            aloop.call_soon_threadsafe(kick.set)

    async def _serve(self, *, drain: bool, timeout: float | None) -> None:
        self.draining = drain
        self._aloop = asyncio.get_running_loop()
        self._kick = kick = asyncio.Event()
        self._ident = threading.get_ident()
        if self.channels:
            self.store.subscribe(self.channels, self.wake)
        deadline = self._deadline(timeout)
        try:
            await self.begin()
            while not self.stopping:
                kick.clear()  # before the turn: a wake-up during it is kept
                ok = await self._safe(self.turn)
                if ok and drain:
                    idle = await self._safe(self.idle, value=True)
                    if idle is True:
                        return
                    ok = idle is not None
                self._check_deadline(deadline, timeout)
                if ok:
                    await self._sleep(deadline)
        finally:
            try:
                await self.close()
            finally:
                self._kick = None

    async def _safe(
        self, fn: Callable[[], Awaitable[object]], *, value: bool = False, quiet: bool = False
    ) -> bool | None:
        try:
            result = await fn()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not self.retryable(exc):
                raise
            delay = self._failed(exc, quiet=quiet)
            await self._backoff(delay)
            return None
        self.failures = 0
        return bool(result) if value else True

    async def _backoff(self, delay: float) -> None:
        assert self._kick is not None
        end = self.clock.monotonic() + delay
        while not self.stopping and (left := end - self.clock.monotonic()) > 0:
            self._kick.clear()  # the next turn comes anyway: nothing is lost
            await self.clock.wait_async(self._kick, left)

    async def _sleep(self, deadline: float | None) -> None:
        assert self._kick is not None
        wait = self._sleep_for(deadline)
        woke = wait > 0 and await self.clock.wait_async(self._kick, wait)
        if woke and self.min_turn_interval > 0:
            await asyncio.sleep(self.min_turn_interval)

    async def close(self) -> None:
        """Shut down (see the module docstring) and release everything."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        try:
            await self._settle(self.grace_seconds)
            if self.in_flight():
                await self.abort()
                await self._settle(self.abort_seconds)
            await self.finish()
        finally:
            self.store.unsubscribe(self.wake)
            await self.release()

    async def _settle(self, seconds: float) -> None:
        assert self._kick is not None
        end = self.clock.monotonic() + seconds
        while self.in_flight() and self.clock.monotonic() < end:
            self._kick.clear()
            try:
                await self._safe(self.turn, quiet=True)
            except Exception:  # nothing may keep the shutdown from stopping what runs
                self.log.exception("%s: turn failed while shutting down", self.name)
                return
            await self.clock.wait_async(self._kick, self.settle_interval)

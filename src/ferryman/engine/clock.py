"""Time for the loops: a monotonic clock for intervals, a wall clock for
timestamps, and waits that end early when an event is set.

Loops take a ``Clock`` (``Clock()``, real time, by default) so that a loop
whose work is due at a time of day (a scheduler, retention) can be tested
with ``ManualClock`` without sleeping: its time moves only when the test
says so, and every wait on it ends as soon as the time it waits for has
come.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time


class Clock:
    """Real time."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (intervals, due times)."""
        return time.monotonic()

    def now(self) -> dt.datetime:
        """The wall-clock time, timezone-aware, in UTC."""
        return dt.datetime.now(dt.UTC)

    def wait(self, event: threading.Event, timeout: float) -> bool:
        """Wait until ``event`` is set (True) or ``timeout`` seconds passed (False)."""
        return event.wait(max(timeout, 0.0))

    async def wait_async(self, event: asyncio.Event, timeout: float) -> bool:
        """``wait`` for an ``asyncio.Event``, inside a running event loop."""
        if event.is_set():
            return True
        try:
            await asyncio.wait_for(event.wait(), max(timeout, 0.0))
        except TimeoutError:
            return False
        return True


class ManualClock(Clock):
    """A clock for tests: it stands still until ``advance`` moves it.

    A wait ends when its event is set or when ``advance`` has moved the
    clock past the wait's end; ``waits`` records every timeout asked for, and
    ``sleepers`` tells how many threads wait right now (so a test can wait
    until a loop has gone to sleep, then move the time on:
    ``wait_for_sleepers``).
    """

    def __init__(self, start: dt.datetime | None = None) -> None:
        self._wall = start or dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
        self._mono = 1000.0
        self._cond = threading.Condition()
        self.waits: list[float] = []
        self.sleepers = 0

    def monotonic(self) -> float:
        with self._cond:
            return self._mono

    def now(self) -> dt.datetime:
        with self._cond:
            return self._wall

    def advance(self, seconds: float) -> None:
        """Move both clocks ``seconds`` on, ending the waits that are over."""
        with self._cond:
            self._mono += seconds
            self._wall += dt.timedelta(seconds=seconds)
            self._cond.notify_all()

    def wait(self, event: threading.Event, timeout: float) -> bool:
        with self._cond:
            end = self._mono + max(timeout, 0.0)
            self.waits.append(timeout)
            self.sleepers += 1
            try:
                # The event has no hook into our condition: look at it often.
                while not event.is_set() and self._mono < end:
                    self._cond.wait(0.002)
            finally:
                self.sleepers -= 1
            return event.is_set()

    async def wait_async(self, event: asyncio.Event, timeout: float) -> bool:
        with self._cond:
            end = self._mono + max(timeout, 0.0)
            self.waits.append(timeout)
            self.sleepers += 1
        try:
            while not event.is_set() and self.monotonic() < end:
                await asyncio.sleep(0.002)
        finally:
            with self._cond:
                self.sleepers -= 1
        return event.is_set()

    def wait_for_sleepers(
        self, n: int = 1, *, waits: int | None = None, timeout: float = 10.0
    ) -> None:
        """Block (real time) until ``n`` threads or tasks wait on this clock
        and, with ``waits``, until that many waits have begun in all (a wait
        that just ended may still be counted among the sleepers: ``waits``
        tells the next one from it)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.sleepers < n or (waits is not None and len(self.waits) < waits):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"nobody waits on the clock after {timeout:g}s")
                self._cond.wait(min(left, 0.002))

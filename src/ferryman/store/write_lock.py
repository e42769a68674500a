"""The in-process writers' queue of an SQLite store: a fair (FIFO) lock in
front of ``BEGIN IMMEDIATE``.

SQLite has one writer at a time. Without this lock, the threads of one
process that want to write all race for SQLite's lock, and the losers sleep
in SQLite's busy handler, polling with growing sleeps: under 16 concurrent
run creations a writer could wait seconds while others came and went
(p99 ~1 s, worst 3 s). Here a writer waits in line and is woken the moment
the one before it commits, in the order they came. Other processes on the
same file still meet SQLite's busy handler (``busy_timeout``).
"""

from __future__ import annotations

import threading
import time
from collections import deque

import sqlalchemy as sa

#: How long a writer waits in line before giving up (SQLite's busy_timeout
#: is the same 30 s): the error is an outage ("database unavailable"), retried.
DEFAULT_WAIT_SECONDS = 30.0

_HANDING_OVER = -1  # owner while the lock passes to the first in line


class FairLock:
    """A re-entrant lock that threads get in the order they asked for it.

    ``release`` hands the lock straight to the first waiter (no thread that
    arrives later can take it in between), so waiting is FIFO and a waiter
    wakes as soon as its turn comes.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._waiters: deque[threading.Lock] = deque()
        self._owner: int | None = None
        self._depth = 0

    def acquire(self, timeout: float = DEFAULT_WAIT_SECONDS) -> None:
        """Wait for the lock (``sqlalchemy.exc.TimeoutError`` after ``timeout`` s)."""
        me = threading.get_ident()
        with self._mutex:
            if self._owner == me:
                self._depth += 1
                return
            if self._owner is None and not self._waiters:
                self._owner, self._depth = me, 1
                return
            gate = threading.Lock()
            gate.acquire()
            self._waiters.append(gate)
        started = time.monotonic()
        if not gate.acquire(timeout=timeout):
            with self._mutex:
                if gate in self._waiters:  # still in line: leave it
                    self._waiters.remove(gate)
                    raise sa.exc.TimeoutError(
                        f"waited {time.monotonic() - started:.0f}s for the database's write lock"
                    )
            gate.acquire()  # handed over just as we gave up: ours after all
        with self._mutex:
            self._owner, self._depth = me, 1

    def release(self) -> None:
        """Release the lock, handing it to the first thread in line."""
        with self._mutex:
            if self._owner != threading.get_ident():
                raise RuntimeError("release of a write lock this thread does not hold")
            self._depth -= 1
            if self._depth:
                return
            if self._waiters:
                self._owner = _HANDING_OVER
                self._waiters.popleft().release()
            else:
                self._owner = None

    @property
    def waiting(self) -> int:
        """How many threads are in line."""
        with self._mutex:
            return len(self._waiters)

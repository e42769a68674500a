"""Keeping a loop running: ``Supervisor`` runs one in a daemon thread and,
when it dies of an error, builds and starts it again after a backoff.

A database outage makes loops fail at start (the worker registers itself)
or mid-way; the server must not end up serving without its loops, and its
log must not fill with tracebacks: an outage is one line per restart, with
the backoff doubling (``first_backoff`` … ``max_backoff``) and starting over
once the loop has run for ``max_backoff`` seconds without failing.

The server imports it once HTTP answers, and the loops themselves are built
(and their modules imported) in their threads.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol

from ferryman.engine.clock import Clock
from ferryman.store.engine import describe_unavailable, is_unavailable

log = logging.getLogger(__name__)


class Runnable(Protocol):
    """What a supervisor runs: a loop (``engine/loop.py``) or anything like it."""

    def run(self) -> None: ...
    def stop(self) -> None: ...


class Supervisor:
    """Runs the loop ``factory`` builds in a daemon thread named after
    ``name``, and keeps it running (see the module docstring)."""

    def __init__(
        self,
        name: str,
        factory: Callable[[], Runnable],
        *,
        clock: Clock | None = None,
        first_backoff: float = 1.0,
        max_backoff: float = 30.0,
    ) -> None:
        self.name = name
        self.restarts = 0
        self._factory = factory
        self._clock = clock or Clock()
        self._first, self._max = first_backoff, max_backoff
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._current: Runnable | None = None
        slug = name.replace(" ", "-")
        self.thread = threading.Thread(target=self._main, name=f"ferryman-{slug}", daemon=True)

    def start(self) -> None:
        """Start the thread (nothing once stopped, or when already started)."""
        with self._lock:
            if not self._stop.is_set() and self.thread.ident is None:
                self.thread.start()

    def stop(self) -> None:
        """Ask the loop to stop (returns at once; see ``join``)."""
        with self._lock:
            self._stop.set()
            current = self._current
        if current is not None:
            current.stop()

    def join(self, timeout: float) -> bool:
        """Wait for the thread to end; whether it did (True when never started)."""
        if self.thread.ident is None:
            return True
        self.thread.join(timeout)
        return not self.thread.is_alive()

    def _main(self) -> None:
        backoff = self._first
        while not self._stop.is_set():
            started = self._clock.monotonic()
            failure = self._run_once()
            if self._stop.is_set():
                return
            if self._clock.monotonic() - started >= self._max:
                backoff = self._first  # it ran well for a while: this failure starts over
            if failure is None:
                log.error("the %s stopped unexpectedly; restarting it in %.0fs", self.name, backoff)
            elif is_unavailable(failure):  # an outage: one line per restart, no traceback
                log.error(
                    "the %s stopped: database unavailable (%s); restarting it in %.0fs",
                    self.name,
                    describe_unavailable(failure),
                    backoff,
                )
            else:
                log.error(
                    "the %s failed; restarting it in %.0fs",
                    self.name,
                    backoff,
                    exc_info=failure,
                )
            self._clock.wait(self._stop, backoff)
            self.restarts += 1
            backoff = min(backoff * 2, self._max)

    def _run_once(self) -> Exception | None:
        """Build the loop and run it; the exception it ended with, if any."""
        try:
            loop = self._factory()
            with self._lock:
                self._current = loop
                stopped = self._stop.is_set()
            if stopped:  # stop() ran while it was being built
                loop.stop()
            loop.run()
        except Exception as exc:
            return exc
        finally:
            with self._lock:
                self._current = None
        return None

"""The scheduler: a loop that fires schedules' ticks when they are due.

Each turn asks ``services.ticks.Ticks.run_due(now)`` to decide every due
tick (fire, miss, skip or buffer it; see docs/schedules.md) and sleeps until
the next one is due, at most ``FERRYMAN_SCHEDULER_POLL_SECONDS``; creating,
editing or resuming a schedule wakes it (``SCHEDULE_CHANNEL``). Any number
of schedulers may run on one database: a tick is claimed by a unique row in
the transaction that creates its run, so none fires twice.

The wall time comes from the loop's ``Clock``, so tests move time with
``ManualClock`` instead of sleeping.
"""

from __future__ import annotations

import datetime as dt

from ferryman.engine.clock import Clock
from ferryman.engine.loop import Loop
from ferryman.services.runs import RunService
from ferryman.services.ticks import Ticks, TurnResult
from ferryman.settings import Settings
from ferryman.store.engine import SCHEDULE_CHANNEL, Store


class Scheduler(Loop):
    """Fires due ticks until stopped (``run()``), or once (``turn()``)."""

    name = "scheduler"
    channels = (SCHEDULE_CHANNEL,)
    min_turn_interval = 0.01

    def __init__(self, store: Store, settings: Settings, *, clock: Clock | None = None) -> None:
        group = settings.scheduler
        super().__init__(
            store,
            poll_seconds=group.scheduler_poll_seconds,
            grace_seconds=max(settings.loops.grace_seconds, 0.1),
            clock=clock,
        )
        self.ticks = Ticks(
            store,
            RunService(store, trigger_max_depth=settings.worker.trigger_max_depth),
            late_after=group.scheduler_late_seconds,
            batch=group.scheduler_batch,
        )
        self.last: TurnResult | None = None

    def turn(self) -> TurnResult:
        """Decide the due ticks; remember when the next one is due."""
        now = self.clock.now()
        result = self.ticks.run_due(now)
        self.last = result
        if result.next_due is None:
            self.next_due = None
        else:
            # Due times are wall times; the loop sleeps on the monotonic clock.
            wait = (result.next_due - self.clock.now()).total_seconds()
            self.next_due = self.clock.monotonic() + max(wait, 0.0)
        return result

    def idle(self) -> bool:
        """Drain mode: nothing due now."""
        return self.next_due is None or self.next_due > self.clock.monotonic()

    def next_wait(self) -> float:
        """Until the next due tick (at most ``poll_seconds``)."""
        wait = super().next_wait()
        return max(wait, 0.0)

    def due_in(self) -> dt.timedelta | None:
        """How long until the next tick is due (for ``ferryman scheduler`` messages)."""
        if self.next_due is None:
            return None
        return dt.timedelta(seconds=max(self.next_due - self.clock.monotonic(), 0.0))

"""Recording what delivery attempts came to, in batches: one transaction
for every attempt that ended since the deliverer's last turn.

Outcomes: 2xx → delivered. 410 Gone → the subscription is disabled (its
pending deliveries wait, and go out if it is enabled again). Anything else →
retried on the delivery retry schedule (``settings.delivery.schedule()``:
5 s, 5 min, 30 min, 2 h, 5 h, then every 10 h, with jitter), or after
``Retry-After`` (429, 503; capped), until ``delivery_max_age`` seconds since
it was queued (or ``delivery_max_attempts`` attempts, when set); then it is
``dead``, listed by the API and CLI, and can be redelivered. Every attempt is
a ``delivery_attempts`` row: status, latency, error, response excerpt. When
a delivery ends (delivered or dead), the next one of its (subscription, run)
becomes due.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ferryman.engine.event_deliverer.queue import Claimed, unlease
from ferryman.services import subscriptions as subs
from ferryman.services.fanout import DEAD, DELIVERED, PENDING, WAITING
from ferryman.settings import Settings
from ferryman.store.engine import Store
from ferryman.store.tables import deliveries, delivery_attempts, utcnow

log = logging.getLogger(__name__)


@dataclass
class Result:
    """What one attempt came to."""

    claimed: Claimed
    time: dt.datetime
    latency_ms: float
    status: int | None = None
    error: str | None = None
    response: str | None = None
    retry_after: float | None = None
    permanent: bool = False

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class Results:
    """Records attempts' results for one deliverer; counts them."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self._schedule = settings.delivery.schedule()
        self._retry_after_cap = settings.delivery.retry_after_cap()
        # An explicit cap bounds the jittered delay too (jitter stays below it).
        self._cap = settings.delivery.max_backoff or float("inf")
        self.delivered_total = 0
        self.attempts_total = 0

    def record(self, batch: list[Result], released: list[Claimed] | None = None) -> None:
        """Record ``batch``'s attempts and put ``released`` (claimed, never tried)
        back to waiting, in one transaction."""
        now = utcnow()
        d = deliveries
        done: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        gone: dict[str, str] = {}
        attempts: list[dict[str, Any]] = []
        ended: list[dict[str, Any]] = []
        for r in batch:
            c = r.claimed
            attempts.append(
                {
                    "delivery_id": c.id,
                    "attempt": c.attempts,
                    "time": r.time,
                    "status": r.status,
                    "latency_ms": r.latency_ms,
                    "error": r.error,
                    "response": r.response,
                }
            )
            if r.ok:
                done.append({"b_id": c.id, "b_status": r.status, "b_at": now})
                if c.last:  # within a chain the next one is ours already (leased)
                    ended.append({"e_id": c.id, "e_sub": c.subscription_id, "e_run": c.run_id})
                continue
            values: dict[str, Any] = {"b_id": c.id, "b_attempts": c.attempts, "b_status": r.status}
            if r.status == 410:
                gone[c.subscription_id] = f"the receiver answered 410 Gone at {now:%Y-%m-%d %H:%M}Z"
                values.update(
                    b_state=PENDING, b_next=now, b_error="HTTP 410 Gone: subscription disabled"
                )
            elif r.permanent or self._exhausted(c, now):
                values.update(b_state=DEAD, b_next=now, b_error=r.error)
                ended.append({"e_id": c.id, "e_sub": c.subscription_id, "e_run": c.run_id})
            else:
                age = (now - c.queued_at).total_seconds()
                delay = self._delay(c.attempts, r.retry_after, self.settings.delivery.max_age - age)
                values.update(
                    b_state=PENDING, b_next=now + dt.timedelta(seconds=delay), b_error=r.error
                )
            failed.append(values)
        with self.store.write() as conn:
            if done:
                # A success counts even if our lease ran out meanwhile (at-least-once).
                conn.execute(
                    sa.update(d)
                    .where(d.c.id == sa.bindparam("b_id"), d.c.state == PENDING)
                    .values(
                        state=DELIVERED,
                        delivered_at=sa.bindparam("b_at", type_=d.c.delivered_at.type),
                        last_status=sa.bindparam("b_status"),
                        last_error=None,
                    ),
                    done,
                )
            if failed:
                # A failure only counts for the attempt we still hold.
                conn.execute(
                    sa.update(d)
                    .where(
                        d.c.id == sa.bindparam("b_id"),
                        d.c.state == PENDING,
                        d.c.attempts == sa.bindparam("b_attempts"),
                    )
                    .values(
                        state=sa.bindparam("b_state"),
                        next_attempt_at=sa.bindparam("b_next", type_=d.c.next_attempt_at.type),
                        last_status=sa.bindparam("b_status"),
                        last_error=sa.bindparam("b_error"),
                    ),
                    failed,
                )
            if released:  # claimed behind a failure, never tried: waiting again
                unlease(conn, [{"r_id": c.id, "r_attempts": c.attempts} for c in released])
            if ended:
                # The next delivery of each (subscription, run) is due now, if it
                # was waiting (not when it is already due or leased: redelivery).
                p = deliveries.alias("p")
                nxt = (
                    sa.select(sa.func.min(p.c.id))
                    .where(
                        p.c.subscription_id == sa.bindparam("e_sub"),
                        p.c.run_id == sa.bindparam("e_run"),
                        p.c.state == PENDING,
                        p.c.id > sa.bindparam("e_id"),
                    )
                    .scalar_subquery()
                )
                conn.execute(
                    sa.update(d)
                    .where(d.c.id == nxt, d.c.next_attempt_at == WAITING)
                    .values(next_attempt_at=now),
                    ended,
                )
            # A subscription deleted meanwhile took its deliveries along.
            alive = set(
                conn.execute(
                    sa.select(d.c.id).where(d.c.id.in_([a["delivery_id"] for a in attempts]))
                ).scalars()
            )
            attempts = [a for a in attempts if a["delivery_id"] in alive]
            if attempts:
                conn.execute(sa.insert(delivery_attempts), attempts)
            for sid, reason in gone.items():
                subs.disable(conn, sid, reason)
        self.attempts_total += len(batch)
        self.delivered_total += len(done)
        for r in batch:
            self._log(r)
        for sid in gone:
            log.warning("subscription %s disabled: its receiver answered 410 Gone", sid)

    def _log(self, r: Result) -> None:
        c = r.claimed
        if r.ok:
            log.debug("delivery %d delivered: attempt %d, HTTP %s, %.1f ms",
                      c.id, c.attempts, r.status, r.latency_ms)  # fmt: skip
        else:
            log.info("delivery %d (subscription %s) attempt %d failed in %.1f ms: %s",
                     c.id, c.subscription_id, c.attempts, r.latency_ms, r.error)  # fmt: skip

    def _exhausted(self, c: Claimed, now: dt.datetime) -> bool:
        """Dead-letter: past the maximum age (or the attempt limit, when set)."""
        limit = self.settings.delivery.max_attempts
        if limit is not None and c.attempts >= limit:
            return True
        return (now - c.queued_at).total_seconds() >= self.settings.delivery.max_age

    def _delay(self, attempts: int, retry_after: float | None, left: float | None = None) -> float:
        """The wait before the next attempt; never past the maximum age (``left``
        seconds away), so the last attempt comes right at it."""
        if retry_after is not None:
            delay = min(max(retry_after, 0.0), self._retry_after_cap)
        else:
            delay = min(self._schedule.delay_after(attempts), self._cap)
        return delay if left is None else min(delay, max(left, 0.0))

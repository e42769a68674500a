"""The callback sender: posts run-completion callbacks (webhooks and Slack
messages).

Callbacks are rows of the ``callbacks`` table, inserted in the same
transaction as the run's final state (``services/callbacks.py``), so a crash
or restart never loses one. This loop claims the rows that are due and
delivers each in a thread pool, so a slow or dead receiver only ever holds
one slot, for at most its timeouts.

Claiming is a lease: one write transaction bumps ``attempts`` and pushes
``next_attempt_at`` to ``now + lease`` (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), so two senders — threads,
processes or machines — never post the same attempt at once. If this
process dies mid-attempt, the lease runs out and another sender retries:
delivery is *at-least-once*, and every attempt carries the same
``webhook-id`` (the row id) for the receiver to de-duplicate. The lease
covers the request's connect, write, read and pool timeouts; a receiver that
dribbles its response slower than that may see a duplicate.

Outcomes: a 2xx (Slack: ``ok``) marks the row ``delivered``; anything else
is retried on the callback retry schedule (``settings.callbacks.schedule()``:
5 s, 5 min, 30 min, 2 h, 5 h, then every 10 h, with jitter), or after the
delay a 429/503 asks for in ``Retry-After`` (capped), until
``callback_max_age`` seconds after the run ended (or
``callback_max_attempts`` attempts, when set), then the row is ``dead`` (its
``last_error`` says why). Errors that cannot heal (unknown run, malformed
target, Slack ``channel_not_found`` …) go to ``dead`` at once. Every attempt
records ``attempts``, ``last_status`` and ``last_error``, and is logged
(without URLs' paths or secrets). Nothing a receiver or the database does
can end the loop: every error is recorded, logged and retried. The
lifecycle (wake-ups on the callbacks channel, drain, shutdown) is the loop
base's (``engine/loop.py``); posting is ``posting.py``.

Webhooks are always signed (Standard Webhooks, ``ferryman.notify.signing``):
with ``FERRYMAN_WEBHOOK_SECRET``, or with the per-install secret generated
under ``FERRYMAN_HOME/webhook_secret``. The HTTP and Slack clients, their
defaults, the destination policy and the error texts come from
``ferryman.http``.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ferryman.engine.callback_sender.posting import (
    CallbackPoster,
    Claimed,
    Outcome,
    describe_target,
)
from ferryman.engine.clock import Clock
from ferryman.engine.loop import Loop
from ferryman.errors import NotFound
from ferryman.http import destination_policy
from ferryman.notify.attachments import failed_step_log
from ferryman.notify.compat import COMPAT_FORMAT, output_uris
from ferryman.notify.compat import webhook_body as compat_webhook_body
from ferryman.notify.report import build_report, excerpt
from ferryman.notify.signing import load_or_create_secret, secret_key
from ferryman.settings import Settings
from ferryman.store.engine import CALLBACK_CHANNEL, Store
from ferryman.store.tables import callbacks, utcnow

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"


class CallbackSender(Loop):
    """Claims due callbacks and delivers them until stopped.

    ``run()`` serves until ``stop()``; ``run_until_idle(timeout)`` serves
    until no callback is pending or in flight (tests, drain mode).
    """

    name = "callback sender"
    channels = (CALLBACK_CHANNEL,)
    min_turn_interval = 0.01  # wake-up storms (a busy worker) cost one cheap read per 10 ms

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        concurrency: int = 16,
        transport: httpx.BaseTransport | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(
            store,
            poll_seconds=settings.loops.poll_seconds,
            grace_seconds=max(settings.loops.grace_seconds, 0.1),
            clock=clock,
        )
        self.settings = settings
        self.concurrency = concurrency
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        secret, _ = load_or_create_secret(settings)
        self.poster = CallbackPoster(
            settings,
            key=secret_key(secret),  # only the key is kept; it is never logged
            policy=destination_policy(settings),
            transport=transport,
        )
        self._schedule = settings.callbacks.schedule()
        self._retry_after_cap = settings.callbacks.retry_after_cap()
        # An explicit cap bounds the jittered delay too (jitter stays below it).
        self._cap = settings.callbacks.max_backoff or float("inf")
        # Connect + write + read + pool timeouts, plus slack: see the module docstring.
        self.lease_seconds = 4 * settings.callbacks.timeout + 5.0
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="ferryman-callback")
        self._lock = threading.Lock()
        self._inflight: set[str] = set()
        self.delivered_total = 0
        self.attempts_total = 0

    # -- the loop's hooks ---------------------------------------------------------------

    def in_flight(self) -> bool:
        with self._lock:
            return bool(self._inflight)

    def idle(self) -> bool:
        """Nothing pending, nothing in flight."""
        return not self.in_flight() and not self.pending()

    def next_wait(self) -> float:
        with self._lock:
            full = len(self._inflight) >= self.concurrency
        # Full: a delivery that ends wakes us; a due callback has to wait anyway.
        return self.poll_seconds if full else super().next_wait()

    def abort(self) -> None:
        # Posts cannot be interrupted: what did not finish stays leased and is
        # retried by the next sender once the lease runs out.
        with self._lock:
            left = len(self._inflight)
        self.log.warning("%d callback(s) still in flight at shutdown; they will be retried", left)

    def release(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        if not self.in_flight():  # else a post still uses it; the process ends anyway
            self.poster.close()

    # -- one turn ---------------------------------------------------------------------------

    def turn(self) -> int:
        """Claim what is due (as many as there are free slots) and start delivering it."""
        if self.stopping:
            return 0
        with self._lock:
            free = self.concurrency - len(self._inflight)
            busy = sorted(self._inflight)
        if free <= 0:
            return 0
        # A cheap read first: on SQLite a claim is a write transaction, which
        # must not be taken on every wake-up of a busy worker.
        with self.store.read() as conn:
            q = sa.select(sa.func.min(callbacks.c.next_attempt_at)).where(
                callbacks.c.state == PENDING
            )
            if busy:
                q = q.where(callbacks.c.id.notin_(busy))
            first = conn.execute(q).scalar()
        now = self.clock.now()
        if not isinstance(first, dt.datetime):
            self.next_due = None
            return 0
        if first > now:
            self.next_due = self.clock.monotonic() + (first - now).total_seconds()
            return 0
        claimed = self.claim(free, busy)
        self.next_due = None if claimed else self.clock.monotonic() + self.poll_seconds
        for c in claimed:
            with self._lock:
                self._inflight.add(c.id)
            self._pool.submit(self._deliver, c)
        return len(claimed)

    def claim(self, limit: int, busy: list[str]) -> list[Claimed]:
        """Lease up to ``limit`` due callbacks, none of ``busy`` (ours, in flight)."""
        now = utcnow()
        lease_until = now + dt.timedelta(seconds=self.lease_seconds)
        due = (
            sa.select(callbacks.c.id)
            .where(callbacks.c.state == PENDING, callbacks.c.next_attempt_at <= now)
            .order_by(callbacks.c.next_attempt_at, callbacks.c.id)
            .limit(limit)
        )
        if busy:  # our own attempt whose lease ran out is not claimed twice
            due = due.where(callbacks.c.id.notin_(busy))
        if self.store.is_postgres:
            due = due.with_for_update(skip_locked=True)
        # Two statements, not ``UPDATE … WHERE id IN (SELECT … LIMIT n FOR UPDATE
        # SKIP LOCKED)``: PostgreSQL may run that subquery as the inner side of a
        # nested-loop semi-join, re-scanning it per outer row; each re-scan skips
        # the rows this very statement has just updated and locks the next ones,
        # so far more than ``n`` rows get claimed.
        stmt = (
            sa.update(callbacks)
            .where(
                callbacks.c.id.in_(sa.bindparam("ids", expanding=True)),
                # belt and braces: on SQLite (no row locks) BEGIN IMMEDIATE
                # already serialises claims; the guard keeps a claim honest anyway
                callbacks.c.state == PENDING,
                callbacks.c.next_attempt_at <= now,
            )
            .values(attempts=callbacks.c.attempts + 1, next_attempt_at=lease_until)
            .returning(
                callbacks.c.id,
                callbacks.c.run_id,
                callbacks.c.kind,
                callbacks.c.target,
                callbacks.c.attempts,
                callbacks.c.created_at,
            )
        )
        with self.store.write() as conn:
            ids = list(conn.execute(due).scalars())
            rows = conn.execute(stmt, {"ids": ids}).all() if ids else []
        return [
            Claimed(r.id, r.run_id, r.kind, dict(r.target or {}), int(r.attempts), r.created_at)
            for r in rows
        ]

    def pending(self) -> bool:
        """Whether any callback is still pending (due or not)."""
        with self.store.read() as conn:
            return (
                conn.execute(
                    sa.select(callbacks.c.id).where(callbacks.c.state == PENDING).limit(1)
                ).first()
                is not None
            )

    # -- one attempt (pool thread) ------------------------------------------------

    def _deliver(self, c: Claimed) -> None:
        started = self.clock.monotonic()
        try:
            outcome = self._attempt(c)
        except Exception as exc:  # a bug must not lose the callback: retry it
            log.exception("callback %s: attempt %d crashed", c.id, c.attempts)
            outcome = Outcome(False, error=f"internal error: {type(exc).__name__}: {exc}")
        latency = self.clock.monotonic() - started
        try:
            self._record(c, outcome, latency)
        except Exception as exc:  # the row stays leased and is retried after the lease
            log.error(
                "callback %s: could not record attempt %d (%s: %s); it will be retried",
                c.id,
                c.attempts,
                type(exc).__name__,
                exc,
            )
        finally:
            with self._lock:
                self._inflight.discard(c.id)
            self.wake()

    def _attempt(self, c: Claimed) -> Outcome:
        if c.kind not in ("webhook", "slack"):
            return Outcome(False, error=f"unknown callback kind {c.kind!r}", permanent=True)
        try:
            with self.store.read() as conn:
                report = build_report(conn, c.run_id, self.settings)
                data = report["data"]
                attachment = None
                if c.kind == "slack" and c.target.get("attach_log") and data["state"] == "failed":
                    attachment = failed_step_log(conn, c.run_id, data["failed_step"])
                if c.kind == "webhook" and c.target.get("format") == COMPAT_FORMAT:
                    report = compat_webhook_body(report, output_uris(conn, c.run_id))
        except NotFound:
            return Outcome(False, error=f"run {c.run_id} no longer exists", permanent=True)
        return self.poster.post(c, report, attachment)

    # -- recording --------------------------------------------------------------

    def _record(self, c: Claimed, o: Outcome, latency: float) -> None:
        now = utcnow()
        where = [callbacks.c.id == c.id, callbacks.c.state == PENDING]
        values: dict[str, Any] = {"last_status": o.status, "last_error": excerpt(o.error, 2000)}
        delay: float | None = None
        if o.ok:
            # A success counts even if our lease ran out meanwhile (at-least-once).
            values.update(state=DELIVERED, delivered_at=now, last_error=None)
        else:
            # A failure only counts for the attempt we still hold: after a lost
            # lease a newer attempt owns the row.
            where.append(callbacks.c.attempts == c.attempts)
            if o.permanent or self._exhausted(c, now):
                values["state"] = DEAD
            else:
                left = None
                if c.created_at is not None:
                    age = (now - c.created_at).total_seconds()
                    left = self.settings.callbacks.max_age - age
                delay = self._delay(c.attempts, o.retry_after, left)
                values["next_attempt_at"] = now + dt.timedelta(seconds=delay)
        with self.store.write() as conn:
            updated = conn.execute(sa.update(callbacks).where(*where).values(**values)).rowcount
        with self._lock:
            self.attempts_total += 1
            self.delivered_total += 1 if o.ok and updated else 0
        target = describe_target(c)
        if not updated:
            log.warning(
                "callback %s (%s): the result of attempt %d came too late and was dropped",
                c.id,
                target,
                c.attempts,
            )
            return
        if o.ok:
            log.info(
                "callback %s (%s, run %s) delivered: attempt %d, status %s, %.3fs",
                c.id, target, c.run_id, c.attempts, o.status, latency,
            )  # fmt: skip
        elif delay is None:
            log.error(
                "callback %s (%s, run %s) is dead after %d attempt(s): %s",
                c.id, target, c.run_id, c.attempts, o.error,
            )  # fmt: skip
        else:
            log.warning(
                "callback %s (%s, run %s) attempt %d failed in %.3fs: %s; retry in %.1fs",
                c.id, target, c.run_id, c.attempts, latency, o.error, delay,
            )  # fmt: skip

    def _exhausted(self, c: Claimed, now: dt.datetime) -> bool:
        """Dead: past the maximum age (or the attempt limit, when set)."""
        limit = self.settings.callbacks.max_attempts
        if limit is not None and c.attempts >= limit:
            return True
        if c.created_at is None:
            return False
        return (now - c.created_at).total_seconds() >= self.settings.callbacks.max_age

    def _delay(self, attempts: int, retry_after: float | None, left: float | None = None) -> float:
        """The wait before the next attempt; never past the maximum age (``left``
        seconds away), so the last attempt comes right at it."""
        if retry_after is not None:
            delay = min(max(retry_after, 0.0), self._retry_after_cap)  # the receiver said when
        else:
            delay = min(self._schedule.delay_after(attempts), self._cap)
        return delay if left is None else min(delay, max(left, 0.0))

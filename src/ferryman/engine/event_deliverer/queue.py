"""The delivery queue: claiming due deliveries, in order.

Deliveries are rows of ``deliveries``, queued in the transaction that writes
their event (``services.fanout.enqueue_deliveries``), so nothing is lost by
a crash or restart.

Ordering: a delivery is claimed only if no older delivery of the same
(subscription, run) is still pending (in flight or waiting for a retry), so
each subscriber receives the events of a run in order. A dead-lettered
delivery no longer holds back the ones after it. The deliveries queued
behind a claimed one (same subscription and run) are claimed with it as a
chain and posted one after the other; at the first failure the rest are put
back untried (``unlease``), so no attempt is counted for a request never
made.

Claiming is a lease (``attempts + 1``, ``next_attempt_at = now + lease``;
``FOR UPDATE SKIP LOCKED`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), so
several deliverers never post the same attempt at once; if this process dies,
the lease runs out and the attempt is made again: delivery is at-least-once,
and every attempt carries the same ``webhook-id``.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ferryman.notify.webhook import envelope
from ferryman.services.fanout import PENDING, WAITING
from ferryman.settings import Settings
from ferryman.store.engine import Store
from ferryman.store.tables import deliveries, events, subscriptions, utcnow

_WINDOW = 200  # due rows looked at per subscription and claim
_CHAIN = 50  # deliveries of one (subscription, run) claimed together, posted in order
_ANALYZE_SECONDS = 15.0  # PostgreSQL: ANALYZE deliveries at most this often while busy


@dataclass(frozen=True)
class Claimed:
    """One claimed attempt of one delivery, with what is needed to make it."""

    id: int
    subscription_id: str
    run_id: str
    attempts: int  # including this one
    queued_at: dt.datetime
    url: str
    format: str
    secret: str
    headers: dict[str, str]
    event: dict[str, Any] | None  # None: the event is gone
    last: bool = True  # the last of its chain (see ``DeliveryQueue.claim``)


class DeliveryQueue:
    """Claims deliveries for one deliverer (see the module docstring)."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.per_subscriber = settings.delivery.per_subscriber
        self.lease_seconds = 2 * settings.delivery.timeout + 10.0
        self._analyzed_at = time.monotonic()

    def claim(self, free: int, per_sub: dict[str, int], busy: list[int]) -> list[list[Claimed]]:
        """Lease up to ``free`` chains, at most ``per_subscriber`` in flight per
        subscription. A chain starts with a due delivery that is the oldest
        pending one of its (subscription, run) and goes on with the deliveries
        queued after it for the same pair (up to ``_CHAIN``), which are posted
        one after the other, in order, on one connection: the events of one
        transaction (a run's creation, a fan-out) go out without waiting for
        a database turn between them.

        Each subscription is looked at through its own window of its oldest
        due rows (an index range scan), so the cost of a claim does not grow
        with the backlog, and a dead subscriber's backlog never hides anybody
        else's deliveries.
        """
        d = deliveries
        p = deliveries.alias("p")
        self._analyze()
        now = utcnow()
        with self.store.read() as conn:
            subs_on = list(
                conn.execute(
                    sa.select(subscriptions.c.id).where(subscriptions.c.enabled.is_(True))
                ).scalars()
            )
        room = {
            sid: self.per_subscriber - per_sub.get(sid, 0)
            for sid in subs_on
            if per_sub.get(sid, 0) < self.per_subscriber
        }
        if not room:
            return []
        # The oldest pending delivery of its (subscription, run) only: ordering.
        head = ~sa.exists().where(
            p.c.subscription_id == d.c.subscription_id,
            p.c.run_id == d.c.run_id,
            p.c.state == PENDING,
            p.c.id < d.c.id,
        )
        # Rendered into the SQL: as a bind parameter, PostgreSQL's generic plan
        # for a prepared statement does not know which subscription's range to
        # scan (seen taking 1-2 s per claim instead of milliseconds).
        sid_param = sa.bindparam("sid", type_=d.c.subscription_id.type, literal_execute=True)
        window = (
            sa.select(d.c.id)
            .where(
                d.c.subscription_id == sid_param, d.c.state == PENDING, d.c.next_attempt_at <= now
            )
            .order_by(d.c.next_attempt_at, d.c.id)
            .limit(_WINDOW)
        )
        q = (
            sa.select(d.c.id)
            .where(d.c.id.in_(window.scalar_subquery()), head)
            .order_by(d.c.next_attempt_at, d.c.id)
            .limit(sa.bindparam("take"))
        )
        if busy:
            q = q.where(d.c.id.notin_(busy))
        if self.store.is_postgres:
            q = q.with_for_update(skip_locked=True, of=d)

        def pick(conn: sa.Connection) -> list[int]:
            picked: list[int] = []
            for sid, n in room.items():
                take = min(n, free - len(picked))
                if take <= 0:
                    break
                picked.extend(conn.execute(q, {"sid": sid, "take": take}).scalars())
            return picked

        if not self.store.is_postgres:
            # SQLite: look in a read transaction first; a claim is a write
            # transaction, not to be taken when there is nothing to claim.
            with self.store.read() as conn:
                if not pick(conn):
                    return []
        lease_until = now + dt.timedelta(seconds=self.lease_seconds)
        with self.store.write() as conn:
            picked = pick(conn)
            if not picked:
                return []
            rows = conn.execute(
                sa.update(d)
                .where(d.c.id.in_(picked), d.c.state == PENDING, d.c.next_attempt_at <= now)
                .values(attempts=d.c.attempts + 1, next_attempt_at=lease_until)
                .returning(
                    d.c.id,
                    d.c.subscription_id,
                    d.c.run_id,
                    d.c.event_id,
                    d.c.attempts,
                    d.c.queued_at,
                )
            ).all()
            if not rows:
                return []
            followers = self._followers(conn, rows, now, lease_until)
            event_ids = {r.event_id for r in rows} | {
                f.event_id for fs in followers.values() for f in fs
            }
            evs = {
                e.id: envelope(e)
                for e in conn.execute(sa.select(events).where(events.c.id.in_(event_ids)))
            }
            sub_rows = {
                x.id: x
                for x in conn.execute(
                    sa.select(subscriptions).where(
                        subscriptions.c.id.in_({r.subscription_id for r in rows})
                    )
                )
            }
        out = []
        for r in sorted(rows, key=lambda r: r.id):
            sub = sub_rows[r.subscription_id]
            members = [r, *followers.get(r.id, ())]
            out.append(
                [
                    Claimed(
                        id=m.id,
                        subscription_id=r.subscription_id,
                        run_id=r.run_id,
                        attempts=int(m.attempts),
                        queued_at=m.queued_at,
                        url=sub.url,
                        format=sub.format,
                        secret=sub.secret,
                        headers=dict(sub.headers or {}),
                        event=evs.get(m.event_id),
                        last=i == len(members) - 1,
                    )
                    for i, m in enumerate(members)
                ]
            )
        return out

    def _followers(
        self,
        conn: sa.Connection,
        heads: Sequence[Any],
        now: dt.datetime,
        lease_until: dt.datetime,
    ) -> dict[int, list[Any]]:
        """Lease the deliveries queued behind each claimed head (same
        subscription and run, in id order, up to ``_CHAIN - 1``): only an
        unbroken run of idle ones (waiting for their turn, or due), so nothing
        is posted out of order and nobody else's lease is taken."""
        d = deliveries
        if _CHAIN <= 1:
            return {}
        head_of = {(r.run_id, r.subscription_id): r.id for r in heads}
        pending = conn.execute(
            sa.select(d.c.id, d.c.run_id, d.c.subscription_id, d.c.next_attempt_at)
            .where(
                sa.tuple_(d.c.run_id, d.c.subscription_id).in_(list(head_of)),
                d.c.state == PENDING,
            )
            .order_by(d.c.id)
        ).all()
        wanted: dict[int, list[int]] = {}
        stopped: set[int] = set()
        for row in pending:
            head = head_of[(row.run_id, row.subscription_id)]
            if row.id <= head or head in stopped:
                continue
            chain = wanted.setdefault(head, [])
            idle = row.next_attempt_at == WAITING or row.next_attempt_at <= now
            if len(chain) >= _CHAIN - 1 or not idle:
                stopped.add(head)  # full, or leased/backing off: nothing after it
                continue
            chain.append(row.id)
        ids = [i for chain in wanted.values() for i in chain]
        if not ids:
            return {}
        leased = {
            r.id: r
            for r in conn.execute(
                sa.update(d)
                .where(
                    d.c.id.in_(ids),
                    d.c.state == PENDING,
                    sa.or_(d.c.next_attempt_at == WAITING, d.c.next_attempt_at <= now),
                )
                .values(attempts=d.c.attempts + 1, next_attempt_at=lease_until)
                .returning(d.c.id, d.c.event_id, d.c.attempts, d.c.queued_at)
            )
        }
        out: dict[int, list[Any]] = {}
        for head, chain in wanted.items():
            got = out.setdefault(head, [])
            for i in chain:
                if i not in leased:
                    break
                got.append(leased[i])
        kept = {r.id for chain in out.values() for r in chain}
        lost = [{"r_id": i, "r_attempts": leased[i].attempts} for i in leased if i not in kept]
        if lost:  # leased behind a gap (changed meanwhile): back to waiting, untried
            unlease(conn, lost)
        return out

    def _analyze(self) -> None:
        """Keep PostgreSQL's statistics of ``deliveries`` fresh while busy.

        A burst can grow the table from nothing to 100,000s of rows within a
        minute, long before autovacuum analyzes it; planned on the stale
        statistics, the claim's ordering check probes the wrong index and a
        claim takes seconds instead of milliseconds.
        """
        now = time.monotonic()
        if not self.store.is_postgres or now - self._analyzed_at < _ANALYZE_SECONDS:
            return
        self._analyzed_at = now
        with self.store.write() as conn:
            conn.exec_driver_sql("ANALYZE deliveries")

    def pending(self) -> bool:
        """Is any delivery of an enabled subscription still pending?"""
        d, s = deliveries, subscriptions
        with self.store.read() as conn:
            q = (
                sa.select(d.c.id)
                .join(s, s.c.id == d.c.subscription_id)
                .where(d.c.state == PENDING, s.c.enabled.is_(True))
                .limit(1)
            )
            return conn.execute(q).first() is not None


def unlease(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
    """Put leased, never-tried deliveries back to waiting (no attempt counted)."""
    d = deliveries
    conn.execute(
        sa.update(d)
        .where(
            d.c.id == sa.bindparam("r_id"),
            d.c.state == PENDING,
            d.c.attempts == sa.bindparam("r_attempts"),
        )
        .values(attempts=d.c.attempts - 1, next_attempt_at=WAITING),
        rows,
    )

"""Fan-out: queueing one delivery per (matching enabled subscription, event).

``enqueue_deliveries`` is called by the transition gate (``Tx.flush``) in the
very transaction that writes the events (the outbox): the events and their
deliveries commit or roll back together. The enabled subscriptions are kept
in memory per database, tagged with ``subscription_generation``, a counter
that every change of a subscription bumps in its own transaction; each flush
reads the counter (one indexed single-row read) and reloads on any
difference, so a change made by any process applies to the next transaction
after it commits.

A delivery is born here, so its states are defined here too.
"""

from __future__ import annotations

import datetime as dt
import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from ferryman.domain.events import EventType
from ferryman.notify.formats import formats
from ferryman.store.prepared import Prepared
from ferryman.store.tables import deliveries, subscription_generation, subscriptions

PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"
DELIVERY_STATES = (PENDING, DELIVERED, DEAD)
# ``next_attempt_at`` of a delivery queued behind another one of the same
# (subscription, run) in the same transaction: never due by itself; the
# deliverer makes it due when the one before it is delivered or dead.
WAITING = dt.datetime(9999, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Matcher:
    """One enabled subscription's filters, ready to test events against."""

    id: str
    types: frozenset[str]
    namespaces: frozenset[str]
    pipelines: frozenset[str]
    labels: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, row: Any) -> Matcher:
        fmt = formats().get(row.format)
        types = set(row.event_types or []) or {t.value for t in EventType}
        # an unknown format (a plug-in uninstalled): nothing to send
        types = {t for t in types if fmt.accepts(t)} if fmt is not None else set()
        return cls(
            id=row.id,
            types=frozenset(types),
            namespaces=frozenset(row.namespaces or []),
            pipelines=frozenset(row.pipelines or []),
            labels=tuple(sorted((row.labels or {}).items())),
        )

    def matches(self, ev: Mapping[str, Any]) -> bool:
        if ev["type"] not in self.types:
            return False
        if self.namespaces and ev["namespace"] not in self.namespaces:
            return False
        if self.pipelines and not (
            ev["pipeline"] in self.pipelines
            or f"{ev['namespace']}/{ev['pipeline']}" in self.pipelines
        ):
            return False
        labels = ev.get("labels") or {}
        return all(labels.get(k) == v for k, v in self.labels)


_GENERATION = Prepared(
    sa.select(subscription_generation.c.generation).where(subscription_generation.c.id == 1),
    returns=("generation",),
)
_INSERT_DELIVERIES = Prepared(
    sa.insert(deliveries).values(
        {c.name: sa.bindparam(c.name, type_=c.type) for c in deliveries.c if c.name != "id"}
    )
)


class _Cache:
    """The enabled subscriptions of one database, with the generation they are of."""

    def __init__(self) -> None:
        self.generation: int | None = None
        self.matchers: tuple[Matcher, ...] = ()
        self.lock = threading.Lock()


_caches: weakref.WeakKeyDictionary[Engine, _Cache] = weakref.WeakKeyDictionary()
_caches_lock = threading.Lock()


def _matchers(conn: Connection) -> tuple[Matcher, ...]:
    engine = conn.engine
    with _caches_lock:
        cache = _caches.get(engine)
        if cache is None:
            cache = _caches[engine] = _Cache()
    rows = _GENERATION.rows(conn, {})
    generation = int(rows[0].generation) if rows else -1
    if generation == cache.generation:
        return cache.matchers
    loaded = tuple(
        Matcher.of(r)
        for r in conn.execute(
            sa.select(subscriptions).where(subscriptions.c.enabled.is_(True))
        ).all()
    )
    with cache.lock:
        cache.generation, cache.matchers = generation, loaded
    return loaded


def enqueue_deliveries(conn: Connection, evs: Sequence[Mapping[str, Any]], now: dt.datetime) -> int:
    """Queue one delivery per (matching enabled subscription, event), in event order.

    Called in the transaction that inserts ``evs`` (the outbox): the events and
    their deliveries commit or roll back together. Returns how many were queued.
    """
    matchers = _matchers(conn)
    if not matchers:
        return 0
    rows = []
    first: set[tuple[str, str]] = set()
    for ev in evs:
        for m in matchers:
            if not m.matches(ev):
                continue
            key = (m.id, ev["run_id"])
            # Only the first of a (subscription, run) in this batch can be due
            # now; the others wait for it (ordering), out of the claim's sight.
            due = now if key not in first else WAITING
            first.add(key)
            rows.append(
                {
                    "subscription_id": m.id,
                    "event_id": ev["id"],
                    "run_id": ev["run_id"],
                    "event_type": ev["type"],
                    "state": PENDING,
                    "attempts": 0,
                    "next_attempt_at": due,
                    "created_at": now,
                    "queued_at": now,
                    "delivered_at": None,
                    "last_status": None,
                    "last_error": None,
                }
            )
    if rows:
        _INSERT_DELIVERIES.run_many(conn, rows)
    return len(rows)

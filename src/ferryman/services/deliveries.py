"""Deliveries of events to subscribers: listing, attempts, redelivery, test sends.

Deliveries are queued by ``services.fanout`` and posted by the event
deliverer (``engine/event_deliverer/``); this module is what the API and the
CLI ask.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ferryman.domain.events import EventType
from ferryman.errors import InvalidInput, NotFound
from ferryman.http import (
    RESPONSE_EXCERPT,
    DestinationPolicy,
    Timeouts,
    answer_shown,
    describe,
    response_excerpt,
)
from ferryman.notify.formats import FormatContext, get_format
from ferryman.notify.webhook import build_request, sample_event
from ferryman.services.fanout import DEAD, DELIVERY_STATES, PENDING, WAITING
from ferryman.services.subscriptions import subscription_row
from ferryman.store.tables import deliveries, delivery_attempts, subscriptions, utcnow

# -- listing, attempts, redelivery --------------------------------------------------------


def _delivery_public(r: Any) -> dict[str, Any]:
    return {
        "id": r.id,
        "subscription_id": r.subscription_id,
        "subscription": r.name,
        "event_id": r.event_id,
        "event_type": r.event_type,
        "run_id": r.run_id,
        "state": r.state,
        "attempts": r.attempts,
        "next_attempt_at": (
            r.next_attempt_at if r.state == PENDING and r.next_attempt_at != WAITING else None
        ),
        "created_at": r.created_at,
        "delivered_at": r.delivered_at,
        "last_status": r.last_status,
        "last_error": r.last_error,
    }


def _delivery_select() -> sa.Select[Any]:
    return sa.select(deliveries, subscriptions.c.name).join(
        subscriptions, subscriptions.c.id == deliveries.c.subscription_id
    )


def list_deliveries(
    conn: Connection,
    *,
    subscription: str | None = None,
    state: str | None = None,
    run_id: str | None = None,
    before: int | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Deliveries, newest first (``before``: ids below this one, for paging)."""
    if state is not None and state not in DELIVERY_STATES:
        known = ", ".join(DELIVERY_STATES)
        raise InvalidInput(f"unknown delivery state {state!r} (one of {known})")
    q = _delivery_select().order_by(deliveries.c.id.desc()).limit(limit)
    if subscription is not None:
        q = q.where(deliveries.c.subscription_id == subscription_row(conn, subscription).id)
    if state is not None:
        q = q.where(deliveries.c.state == state)
    if run_id is not None:
        q = q.where(deliveries.c.run_id == run_id)
    if before is not None:
        q = q.where(deliveries.c.id < before)
    return [_delivery_public(r) for r in conn.execute(q)]


def get_delivery(conn: Connection, delivery_id: int) -> dict[str, Any]:
    """One delivery and every attempt of it (oldest first)."""
    r = conn.execute(_delivery_select().where(deliveries.c.id == delivery_id)).first()
    if r is None:
        raise NotFound(f"no delivery {delivery_id}")
    out = _delivery_public(r)
    out["attempt_log"] = [
        {
            "attempt": a.attempt,
            "time": a.time,
            "status": a.status,
            "latency_ms": a.latency_ms,
            "error": a.error,
            "response": a.response,
        }
        for a in conn.execute(
            sa.select(delivery_attempts)
            .where(delivery_attempts.c.delivery_id == delivery_id)
            .order_by(delivery_attempts.c.id)
        )
    ]
    return out


def redeliver(conn: Connection, delivery_ids: Iterable[int]) -> int:
    """Queue dead (or delivered) deliveries again, with a fresh retry budget.

    Returns how many were queued; pending ones are left as they are.
    """
    ids = list(delivery_ids)
    if not ids:
        return 0
    now = utcnow()
    n = conn.execute(
        sa.update(deliveries)
        .where(deliveries.c.id.in_(ids), deliveries.c.state != PENDING)
        .values(state=PENDING, attempts=0, next_attempt_at=now, queued_at=now, delivered_at=None)
    ).rowcount
    return int(n or 0)


def redeliver_dead(conn: Connection, subscription: str) -> int:
    """Queue every dead delivery of a subscription again."""
    sid = subscription_row(conn, subscription).id
    ids = conn.execute(
        sa.select(deliveries.c.id).where(
            deliveries.c.subscription_id == sid, deliveries.c.state == DEAD
        )
    ).scalars()
    return redeliver(conn, ids)


# -- test sends -------------------------------------------------------------------------


@dataclass
class TestResult:
    """What a receiver answered to a test event."""

    event_id: str
    status: int | None
    latency_ms: float
    response: str | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def send_test(
    conn: Connection,
    ref: str,
    *,
    policy: DestinationPolicy,
    event_type: str = "RunSucceeded",
    timeout: float = 10.0,
    ctx: FormatContext | None = None,
) -> TestResult:
    """POST a sample event to a subscription now (synchronously) and report the answer.

    Nothing is recorded: the test is not an event. A format without an
    equivalent for ``event_type`` is an ``InvalidInput``. ``policy``: the
    destination policy (``ferryman.http.destination_policy(settings)``); a
    refused destination gets no request, only the refusal.

    The start of the answer is shown for a 2xx answer, or one from a public
    address; a non-2xx answer from anywhere else (a service on the server's
    own network that the policy allows) shows only its status: the test
    send must not become a way to read internal services.
    """
    from ferryman.http.sync import ERRORS, peer_address, read_start, sync_client

    row = subscription_row(conn, ref)
    try:
        fmt = get_format(row.format)
    except KeyError as exc:
        raise InvalidInput(str(exc.args[0])) from None
    if event_type not in {t.value for t in EventType}:
        raise InvalidInput(f"unknown event type {event_type!r}")
    if not fmt.accepts(event_type):
        raise InvalidInput(f"the {row.format} format has no equivalent of {event_type}")
    event = sample_event(event_type)
    body, headers = build_request(
        secret=row.secret,
        fmt_name=row.format,
        extra_headers=row.headers or {},
        event=event,
        ctx=ctx or FormatContext(),
    )
    started = time.monotonic()
    try:
        with (
            sync_client(Timeouts.per_phase(timeout), policy=policy) as client,
            client.stream("POST", row.url, content=body, headers=headers) as resp,
        ):
            text = None
            if answer_shown(resp.status_code, peer_address(resp)):
                text = response_excerpt(read_start(resp, RESPONSE_EXCERPT * 4))
        return TestResult(event["id"], resp.status_code, _ms(started), text, None)
    except ERRORS as exc:
        error = describe(exc, timeout=timeout).error
        return TestResult(event["id"], None, _ms(started), None, error)


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)

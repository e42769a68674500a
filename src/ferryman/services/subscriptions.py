"""Event subscriptions: who receives which events, in which format.

A subscription is a URL plus filters (event types, namespaces, pipelines,
labels), a payload format, a Standard Webhooks signing secret, extra headers
and an enabled flag. Subscriptions come from the API, the CLI or a file
(``FERRYMAN_SUBSCRIPTIONS_FILE``; those rows are marked ``source="file"`` and
reconciled by name whenever the file changes).

Deliveries are queued by ``enqueue_deliveries``, called by the transition
gate (``Tx.flush``) in the very transaction that writes the events: one row
per (matching enabled subscription, event). The enabled subscriptions are kept
in memory per database, tagged with ``subscription_generation``, a counter that
every change of a subscription bumps in its own transaction; each flush reads
the counter (one indexed single-row read) and reloads on any difference, so
a change made by any process applies to the next transaction after it commits.

The signing secret is stored (it must be, to sign), returned once when it is
created and never again, and never logged.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy.engine import Connection, Engine

from ferryman.domain.events import EventType
from ferryman.errors import Conflict, InvalidInput, NotFound
from ferryman.notify.formats import FormatContext, formats, get_format
from ferryman.notify.signing import SecretError, generate_secret, secret_key, signed_headers
from ferryman.store.prepared import Prepared
from ferryman.store.tables import (
    deliveries,
    delivery_attempts,
    events,
    new_id,
    subscription_generation,
    subscriptions,
    utcnow,
)

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
# Headers ferryman sets itself: a subscription may not override them.
RESERVED_HEADERS = frozenset(
    {
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "content-type",
        "content-length",
        "host",
        "transfer-encoding",
        "connection",
    }
)
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")
_HEADER_VALUE = re.compile(r"^[^\x00-\x1f\x7f]{0,2048}$")
RESPONSE_EXCERPT = 500  # characters of a receiver's answer kept per attempt

PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"
# ``next_attempt_at`` of a delivery queued behind another one of the same
# (subscription, run) in the same transaction: never due by itself; the
# deliverer makes it due when the one before it is delivered or dead.
WAITING = dt.datetime(9999, 1, 1, tzinfo=dt.UTC)
DELIVERY_STATES = (PENDING, DELIVERED, DEAD)


# -- the subscription model --------------------------------------------------------


def _check_url(url: str) -> str:
    if any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in url):
        raise ValueError("must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a malformed port
    except ValueError as exc:
        raise ValueError(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    return url


def _check_headers(headers: dict[str, str]) -> dict[str, str]:
    bad = []
    for k, v in headers.items():
        if not _HEADER_NAME.match(k):
            bad.append(f"{k!r} is not a valid header name")
        elif k.lower() in RESERVED_HEADERS:
            bad.append(f"{k!r} is set by ferryman and cannot be overridden")
        elif not _HEADER_VALUE.match(v):
            bad.append(f"the value of {k!r} has control characters or is too long")
    if bad:
        raise ValueError("; ".join(bad))
    return headers


def _check_format(name: str) -> str:
    known = formats()
    if name not in known:
        raise ValueError(f"unknown format {name!r} (one of: {', '.join(sorted(known))})")
    return name


def _check_secret(secret: str | None) -> str | None:
    if secret is None:
        return None
    try:
        secret_key(secret)
    except SecretError as exc:
        raise ValueError(str(exc).replace("FERRYMAN_WEBHOOK_SECRET", "the secret")) from None
    return secret


_Names = list[str]


class SubscriptionFields(BaseModel):
    """The filters and delivery options of a subscription (shared by create and update)."""

    model_config = ConfigDict(extra="forbid")

    event_types: list[EventType] = Field(
        default_factory=list, max_length=64, description="Event types to send (empty: all)"
    )
    namespaces: _Names = Field(
        default_factory=list, max_length=256, description="Namespaces to send (empty: all)"
    )
    pipelines: _Names = Field(
        default_factory=list,
        max_length=256,
        description="Pipelines to send, as 'name' or 'namespace/name' (empty: all)",
    )
    labels: dict[str, str] = Field(
        default_factory=dict,
        max_length=64,
        description="Only runs carrying all these labels (empty: any run)",
    )
    headers: dict[str, str] = Field(
        default_factory=dict, max_length=64, description="Extra HTTP headers sent with each POST"
    )

    @field_validator("namespaces", "pipelines")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        for n in v:
            if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_./-]{0,255}$", n):
                raise ValueError(f"{n!r} is not a namespace or pipeline name")
        return v

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        for k, val in v.items():
            if not k or len(k) > 128 or len(val) > 256 or "\x00" in k + val:
                raise ValueError(f"label {k!r}: keys 1-128 and values 0-256 characters, no NUL")
        return v

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, str]) -> dict[str, str]:
        return _check_headers(v)


class SubscriptionCreate(SubscriptionFields):
    """A new subscription."""

    name: str = Field(pattern=NAME_PATTERN, description="Unique name, e.g. 'ops-alerts'")
    url: str = Field(min_length=1, max_length=2048, description="Where events are POSTed")
    format: str = Field(default="ferryman", max_length=64, description="Payload format")
    secret: str | None = Field(
        default=None,
        max_length=256,
        description="whsec_<base64> signing secret; generated (and shown once) when absent",
    )
    enabled: bool = True

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _check_url(v)

    @field_validator("format")
    @classmethod
    def _format(cls, v: str) -> str:
        return _check_format(v)

    @field_validator("secret")
    @classmethod
    def _secret(cls, v: str | None) -> str | None:
        return _check_secret(v)


class SubscriptionUpdate(BaseModel):
    """A change to a subscription: only the fields given change."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, min_length=1, max_length=2048)
    format: str | None = Field(default=None, max_length=64)
    event_types: list[EventType] | None = Field(default=None, max_length=64)
    namespaces: _Names | None = Field(default=None, max_length=256)
    pipelines: _Names | None = Field(default=None, max_length=256)
    labels: dict[str, str] | None = Field(default=None, max_length=64)
    headers: dict[str, str] | None = Field(default=None, max_length=64)
    secret: str | None = Field(default=None, max_length=256, description="A new signing secret")
    enabled: bool | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return None if v is None else _check_url(v)

    @field_validator("format")
    @classmethod
    def _format(cls, v: str | None) -> str | None:
        return None if v is None else _check_format(v)

    @field_validator("secret")
    @classmethod
    def _secret(cls, v: str | None) -> str | None:
        return _check_secret(v)

    @field_validator("namespaces", "pipelines")
    @classmethod
    def _names(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else SubscriptionFields._names(v)

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        return None if v is None else SubscriptionFields._labels(v)

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        return None if v is None else _check_headers(v)


def public(row: Any) -> dict[str, Any]:
    """A subscription as shown to users: everything but the secret."""
    return {
        "id": row.id,
        "name": row.name,
        "url": row.url,
        "format": row.format,
        "event_types": list(row.event_types or []),
        "namespaces": list(row.namespaces or []),
        "pipelines": list(row.pipelines or []),
        "labels": dict(row.labels or {}),
        "headers": {k: mask(v) for k, v in (row.headers or {}).items()},
        "enabled": bool(row.enabled),
        "disabled_reason": row.disabled_reason,
        "source": row.source,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


def mask(value: str) -> str:
    """Header values often carry tokens: only their length is shown."""
    return "****" if value else ""


# -- CRUD --------------------------------------------------------------------------


def bump_generation(conn: Connection) -> None:
    """Tell every process that the subscriptions changed (same transaction)."""
    n = conn.execute(
        sa.update(subscription_generation)
        .where(subscription_generation.c.id == 1)
        .values(generation=subscription_generation.c.generation + 1)
    ).rowcount
    if not n:
        conn.execute(sa.insert(subscription_generation).values(id=1, generation=1))


def create_subscription(
    conn: Connection, spec: SubscriptionCreate, *, source: str = "api"
) -> tuple[dict[str, Any], str]:
    """Insert a subscription; returns its public record and its secret (show it once)."""
    if conn.execute(sa.select(subscriptions.c.id).where(subscriptions.c.name == spec.name)).first():
        raise Conflict(f"a subscription named {spec.name!r} already exists")
    secret = spec.secret or generate_secret()
    now = utcnow()
    sid = new_id()
    conn.execute(
        sa.insert(subscriptions).values(
            id=sid,
            name=spec.name,
            url=spec.url,
            format=spec.format,
            event_types=[str(t) for t in spec.event_types],
            namespaces=spec.namespaces,
            pipelines=spec.pipelines,
            labels=spec.labels,
            secret=secret,
            headers=spec.headers,
            enabled=spec.enabled,
            disabled_reason=None,
            source=source,
            created_at=now,
            updated_at=now,
        )
    )
    bump_generation(conn)
    return get_subscription(conn, sid), secret


def _row(conn: Connection, ref: str) -> Any:
    """A subscription by id or by name."""
    row = conn.execute(
        sa.select(subscriptions).where(
            sa.or_(subscriptions.c.id == ref, subscriptions.c.name == ref)
        )
    ).first()
    if row is None:
        raise NotFound(f"no subscription {ref!r}")
    return row


def get_subscription(conn: Connection, ref: str) -> dict[str, Any]:
    """A subscription (by id or name), without its secret."""
    return public(_row(conn, ref))


def list_subscriptions(conn: Connection) -> list[dict[str, Any]]:
    """Every subscription, by name, without secrets."""
    q = sa.select(subscriptions).order_by(subscriptions.c.name)
    return [public(r) for r in conn.execute(q)]


def update_subscription(
    conn: Connection, ref: str, change: SubscriptionUpdate, *, source: str | None = None
) -> dict[str, Any]:
    """Change a subscription; re-enabling it clears its ``disabled_reason``."""
    row = _row(conn, ref)
    if source is None and row.source == "file":
        raise Conflict(
            f"subscription {row.name!r} comes from the subscriptions file: change it there"
        )
    values: dict[str, Any] = {}
    for key, val in change.model_dump(exclude_unset=True).items():
        if val is None:
            continue
        values[key] = [str(t) for t in val] if key == "event_types" else val
    if values.get("enabled"):
        values["disabled_reason"] = None
    if values:
        values["updated_at"] = utcnow()
        conn.execute(sa.update(subscriptions).where(subscriptions.c.id == row.id).values(**values))
        bump_generation(conn)
    return get_subscription(conn, row.id)


def delete_subscription(conn: Connection, ref: str, *, source: str | None = None) -> str:
    """Delete a subscription and its deliveries; returns its id."""
    row = _row(conn, ref)
    if source is None and row.source == "file":
        raise Conflict(
            f"subscription {row.name!r} comes from the subscriptions file: remove it there"
        )
    # Explicit, not only ON DELETE CASCADE: SQLite enforces it only with foreign keys on.
    ids = sa.select(deliveries.c.id).where(deliveries.c.subscription_id == row.id)
    conn.execute(sa.delete(delivery_attempts).where(delivery_attempts.c.delivery_id.in_(ids)))
    conn.execute(sa.delete(deliveries).where(deliveries.c.subscription_id == row.id))
    conn.execute(sa.delete(subscriptions).where(subscriptions.c.id == row.id))
    bump_generation(conn)
    return str(row.id)


def disable(conn: Connection, subscription_id: str, reason: str) -> None:
    """Switch a subscription off (e.g. its receiver answered 410 Gone)."""
    conn.execute(
        sa.update(subscriptions)
        .where(subscriptions.c.id == subscription_id)
        .values(enabled=False, disabled_reason=reason, updated_at=utcnow())
    )
    bump_generation(conn)


# -- matching and queueing (the transition gate's hook) -------------------------------


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


# -- rendering and signing ------------------------------------------------------------


def envelope(row: Any) -> dict[str, Any]:
    """The ferryman envelope (SPEC §4) of an ``events`` row, JSON-ready."""
    when = row.time
    return {
        "id": row.id,
        "seq": row.seq,
        "type": row.type,
        "time": when.isoformat().replace("+00:00", "Z") if when else None,
        "namespace": row.namespace,
        "pipeline": row.pipeline,
        "pipeline_version": row.pipeline_version,
        "run_id": row.run_id,
        "node": row.node,
        "attempt": row.attempt,
        "message": row.message or "",
        "labels": dict(row.labels or {}),
        "data": dict(row.data or {}),
    }


def build_request(
    *,
    secret: str,
    fmt_name: str,
    extra_headers: Mapping[str, str],
    event: dict[str, Any],
    ctx: FormatContext,
    user_agent: str,
) -> tuple[bytes, dict[str, str]]:
    """The body and headers of one attempt: rendered, then signed with the event
    id as the stable ``webhook-id`` and a fresh timestamp."""
    body = json.dumps(
        get_format(fmt_name).render(event, ctx), separators=(",", ":"), ensure_ascii=False
    ).encode()
    headers = {
        **extra_headers,
        "content-type": "application/json",
        "user-agent": user_agent,
        **signed_headers(secret_key(secret), event["id"], body),
    }
    return body, headers


def sample_event(
    event_type: str = "RunSucceeded", *, namespace: str = "default", pipeline: str = "example"
) -> dict[str, Any]:
    """A made-up event for ``subscriptions test`` (its ``data.test`` is true)."""
    node = "train" if event_type.startswith("Node") else None
    return {
        "id": new_id(),
        "seq": 0,
        "type": event_type,
        "time": utcnow().isoformat().replace("+00:00", "Z"),
        "namespace": namespace,
        "pipeline": pipeline,
        "pipeline_version": "1",
        "run_id": "0" * 32,
        "node": node,
        "attempt": 1 if node else None,
        "message": "test event sent by `ferryman subscriptions test`",
        "labels": {},
        "data": {"test": True},
    }


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
    event_type: str = "RunSucceeded",
    timeout: float = 10.0,
    ctx: FormatContext | None = None,
) -> TestResult:
    """POST a sample event to a subscription now (synchronously) and report the answer.

    Nothing is recorded: the test is not an event. A format without an
    equivalent for ``event_type`` is an ``InvalidInput``.
    """
    import httpx

    from ferryman import __version__

    row = _row(conn, ref)
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
        user_agent=f"ferryman/{__version__}",
    )
    started = time.monotonic()
    try:
        with httpx.Client(timeout=timeout, trust_env=False, follow_redirects=False) as client:
            resp = client.post(row.url, content=body, headers=headers)
        text = excerpt_text(resp.text)
        return TestResult(event["id"], resp.status_code, _ms(started), text, None)
    except httpx.HTTPError as exc:
        return TestResult(event["id"], None, _ms(started), None, describe_error(exc, timeout))


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)


def excerpt_text(text: str | None) -> str | None:
    """The start of a receiver's answer, whitespace collapsed."""
    if not text:
        return None
    return " ".join(text[: RESPONSE_EXCERPT * 2].split())[:RESPONSE_EXCERPT] or None


def describe_error(exc: Exception, timeout: float) -> str:
    """An attempt's transport error, without the URL (it may hold a token)."""
    import httpx

    if isinstance(exc, httpx.TimeoutException):
        return f"timed out after {timeout:g}s ({type(exc).__name__})"
    if isinstance(exc, (httpx.InvalidURL, httpx.UnsupportedProtocol)):
        return f"invalid URL ({type(exc).__name__})"
    text = str(exc).split(" for url ")[0]
    return f"{type(exc).__name__}: {text}"[:300]


# -- deliveries: listing, attempts, redelivery -----------------------------------------


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
        q = q.where(deliveries.c.subscription_id == _row(conn, subscription).id)
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
    sid = _row(conn, subscription).id
    ids = conn.execute(
        sa.select(deliveries.c.id).where(
            deliveries.c.subscription_id == sid, deliveries.c.state == DEAD
        )
    ).scalars()
    return redeliver(conn, ids)


def event_row(conn: Connection, event_id: str) -> Any:
    """The ``events`` row of an id (``NotFound`` when it is gone)."""
    row = conn.execute(sa.select(events).where(events.c.id == event_id)).first()
    if row is None:
        raise NotFound(f"no event {event_id}")
    return row


# -- the subscriptions file ----------------------------------------------------------------


class FileError(ValueError):
    """A subscriptions file that cannot be used; the message lists every problem."""


def read_file(path: Path) -> list[SubscriptionCreate]:
    """Parse and validate a subscriptions file (YAML or JSON).

    The file is a list of entries, or a mapping with a ``subscriptions`` list.
    An entry may give ``secret_env: NAME`` to read its secret from the
    environment instead of writing it in the file.
    """
    import os

    import yaml

    try:
        text = path.read_text()
    except OSError as exc:
        raise FileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise FileError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: "
                        f"{str(exc).splitlines()[0]}") from None  # fmt: skip
    if isinstance(data, dict) and "subscriptions" in data:
        data = data["subscriptions"]
    if data is None:
        data = []
    if not isinstance(data, list):
        raise FileError(f"{path}: expected a list of subscriptions")
    problems: list[str] = []
    out: list[SubscriptionCreate] = []
    seen: set[str] = set()
    for i, entry in enumerate(data):
        where = f"entry {i + 1}"
        if not isinstance(entry, dict):
            problems.append(f"{where}: expected a mapping")
            continue
        entry = dict(entry)
        if isinstance(entry.get("name"), str):
            where = f"entry {i + 1} ({entry['name']})"
        env = entry.pop("secret_env", None)
        if env is not None:
            value = os.environ.get(str(env))
            if not value:
                problems.append(f"{where}: secret_env: environment variable {env} is not set")
                continue
            entry["secret"] = value
        try:
            spec = SubscriptionCreate.model_validate(entry)
        except ValidationError as exc:
            for e in exc.errors():
                loc = ".".join(str(x) for x in e["loc"]) or "(entry)"
                problems.append(f"{where}: {loc}: {e['msg']}")
            continue
        if spec.name in seen:
            problems.append(f"{where}: the name {spec.name!r} is used twice")
            continue
        seen.add(spec.name)
        out.append(spec)
    if problems:
        raise FileError(f"{path}: " + "; ".join(problems))
    return out


def reconcile_file(conn: Connection, specs: Sequence[SubscriptionCreate]) -> list[str]:
    """Make the ``source="file"`` subscriptions equal to ``specs`` (by name).

    New names are created, changed ones updated (the secret only when the
    file gives one: a generated secret is kept), missing ones deleted. A name
    already used by an API subscription is skipped. Returns what changed.
    """
    existing = {r.name: r for r in conn.execute(sa.select(subscriptions))}
    changes: list[str] = []
    wanted = {s.name for s in specs}
    for spec in specs:
        row = existing.get(spec.name)
        if row is None:
            create_subscription(conn, spec, source="file")
            changes.append(f"added {spec.name}")
            continue
        if row.source != "file":
            changes.append(f"skipped {spec.name} (a subscription made through the API has it)")
            continue
        fields = spec.model_dump(exclude={"name", "secret"})
        fields["event_types"] = [str(t) for t in spec.event_types]
        current = {k: getattr(row, k) for k in fields}
        same = all(current[k] == v for k, v in fields.items() if k != "enabled")
        # A file entry switched off by a 410 stays off until the file changes it.
        enabled_same = bool(row.enabled) == spec.enabled or (
            not row.enabled and row.disabled_reason is not None and spec.enabled
        )
        secret_same = spec.secret is None or spec.secret == row.secret
        if same and enabled_same and secret_same:
            continue
        update_subscription(
            conn,
            row.id,
            SubscriptionUpdate.model_validate(
                {**fields, **({"secret": spec.secret} if spec.secret else {})}
            ),
            source="file",
        )
        changes.append(f"updated {spec.name}")
    for name, row in existing.items():
        if row.source == "file" and name not in wanted:
            delete_subscription(conn, row.id, source="file")
            changes.append(f"removed {name}")
    return changes

"""Event subscriptions: who receives which events, in which format.

A subscription is a URL plus filters (event types, namespaces, pipelines,
labels), a payload format, a Standard Webhooks signing secret, extra headers
and an enabled flag. Subscriptions come from the API, the CLI or a file
(``services.subscriptions_file``; those rows are marked ``source="file"``).
Every change bumps ``subscription_generation`` in its own transaction, which
tells the fan-out (``services.fanout``) of every process to reload.
Deliveries: ``services.deliveries``; the requests: ``notify.webhook``.

The signing secret is stored (it must be, to sign), returned once when it is
created and never again, and never logged.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy.engine import Connection

from ferryman.domain.events import EventType
from ferryman.errors import Conflict, InvalidInput, NotFound
from ferryman.http import PERMISSIVE, DestinationPolicy, DestinationRefused
from ferryman.notify.formats import formats
from ferryman.notify.signing import SecretError, generate_secret, secret_key
from ferryman.secret_box import SecretBox
from ferryman.store.tables import (
    JSONType,
    deliveries,
    delivery_attempts,
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


def check_destination(url: str, policy: DestinationPolicy, field: str = "url") -> None:
    """``InvalidInput`` when the destination policy refuses ``url`` (checked again
    before every request: this is only the early answer). ``field`` names the
    input in the message and the details."""
    try:
        policy.check_url(url)
    except DestinationRefused as exc:
        raise InvalidInput(
            f"{field}: destination refused: {exc.reason}",
            [{"path": field, "reason": f"destination refused: {exc.reason}"}],
        ) from None


def create_subscription(
    conn: Connection,
    spec: SubscriptionCreate,
    *,
    source: str = "api",
    policy: DestinationPolicy = PERMISSIVE,
) -> tuple[dict[str, Any], str]:
    """Insert a subscription; returns its public record and its secret (show it once).

    ``policy``: the destination policy (``ferryman.http.destination_policy``).
    """
    check_destination(spec.url, policy)
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


def subscription_row(conn: Connection, ref: str) -> Any:
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
    return public(subscription_row(conn, ref))


def list_subscriptions(conn: Connection) -> list[dict[str, Any]]:
    """Every subscription, by name, without secrets."""
    q = sa.select(subscriptions).order_by(subscriptions.c.name)
    return [public(r) for r in conn.execute(q)]


def update_subscription(
    conn: Connection,
    ref: str,
    change: SubscriptionUpdate,
    *,
    source: str | None = None,
    policy: DestinationPolicy = PERMISSIVE,
) -> dict[str, Any]:
    """Change a subscription; re-enabling it clears its ``disabled_reason``."""
    if change.url is not None:
        check_destination(change.url, policy)
    row = subscription_row(conn, ref)
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
    row = subscription_row(conn, ref)
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


# The stored values as they are (sealed), not through the sealing column types.
_RAW = sa.table(
    "subscriptions",
    sa.column("id", sa.String),
    sa.column("secret", sa.Text),
    sa.column("headers", JSONType),
)


def reseal_secrets(conn: Connection, box: SecretBox) -> int:
    """Seal every subscription's secret and header values with ``box``'s first
    key (opening them with whichever of its keys sealed them): the step of a
    key rotation after which the old key can go. Returns how many rows."""
    rows = conn.execute(sa.select(_RAW.c.id, _RAW.c.secret, _RAW.c.headers)).all()
    for row in rows:
        headers = {
            k: box.reseal(v) if isinstance(v, str) else v for k, v in (row.headers or {}).items()
        }
        conn.execute(
            sa.update(_RAW)
            .where(_RAW.c.id == row.id)
            .values(secret=box.reseal(row.secret), headers=headers)
        )
    if rows:
        bump_generation(conn)
    return len(rows)


def disable(conn: Connection, subscription_id: str, reason: str) -> None:
    """Switch a subscription off (e.g. its receiver answered 410 Gone)."""
    conn.execute(
        sa.update(subscriptions)
        .where(subscriptions.c.id == subscription_id)
        .values(enabled=False, disabled_reason=reason, updated_at=utcnow())
    )
    bump_generation(conn)

"""Public models of the subscriptions and deliveries API (shared with the client;
pydantic only, so ``ferryman.client`` stays free of FastAPI and SQLAlchemy)."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field

from ferryman.domain.events import EventType


class SubscriptionPublic(BaseModel):
    """A subscription, without its secret (header values masked)."""

    id: str
    name: str
    url: str
    format: str
    event_types: list[str]
    namespaces: list[str]
    pipelines: list[str]
    labels: dict[str, str]
    headers: dict[str, str] = Field(description="Extra headers; values masked")
    enabled: bool
    disabled_reason: str | None = Field(description="Why it was switched off (e.g. 410 Gone)")
    source: str = Field(description="'api' or 'file' (FERRYMAN_SUBSCRIPTIONS_FILE)")
    created_at: dt.datetime
    updated_at: dt.datetime


class SubscriptionCreated(SubscriptionPublic):
    """A new subscription plus its signing secret: shown only this once."""

    secret: str = Field(description="whsec_… signing secret. Store it now: it is not shown again")


class SubscriptionList(BaseModel):
    """Every subscription, by name."""

    items: list[SubscriptionPublic]


class TestRequest(BaseModel):
    """Which sample event to send."""

    model_config = ConfigDict(extra="forbid")

    event_type: EventType = EventType.RUN_SUCCEEDED


class TestResult(BaseModel):
    """What the receiver answered to a sample event."""

    event_id: str = Field(description="The sample event's id (its webhook-id)")
    ok: bool = Field(description="The receiver answered 2xx")
    status: int | None = Field(description="HTTP status; null when there was no answer")
    latency_ms: float
    response: str | None = Field(description="The start of the receiver's answer")
    error: str | None


class DeliveryPublic(BaseModel):
    """One event's delivery to one subscription."""

    id: int
    subscription_id: str
    subscription: str = Field(description="The subscription's name")
    event_id: str = Field(description="Also the webhook-id of every attempt")
    event_type: str
    run_id: str
    state: str = Field(description="pending, delivered or dead")
    attempts: int
    next_attempt_at: dt.datetime | None
    created_at: dt.datetime
    delivered_at: dt.datetime | None
    last_status: int | None
    last_error: str | None


class AttemptPublic(BaseModel):
    """One attempt of a delivery."""

    attempt: int
    time: dt.datetime
    status: int | None
    latency_ms: float
    error: str | None
    response: str | None = Field(description="The start of the receiver's answer")


class DeliveryDetail(DeliveryPublic):
    """A delivery and every attempt of it."""

    attempt_log: list[AttemptPublic]


class DeliveryList(BaseModel):
    """Deliveries, newest first; pass ``next_before`` as ``before`` for the next page."""

    items: list[DeliveryPublic]
    next_before: int | None


class Redelivered(BaseModel):
    """How many deliveries were queued again."""

    queued: int

"""Event subscriptions and their deliveries (SPEC §4).

Who may do what:

- **viewers** list and read subscriptions, deliveries and delivery attempts
  (never a secret: the signing secret is shown once, in the answer to the
  creation, and header values are masked; a URL's path and query, which can
  carry credentials, are shown to admins only: ``https://host/…`` to others);
- **operators** redeliver dead-lettered deliveries (an operational action on
  existing subscriptions);
- **admins** create, change, delete and test subscriptions: a subscription
  decides where the server sends data, so it is an administrator's choice.

Subscriptions from the subscriptions file (``source: file``) are changed in
the file, not through the API (409).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response

from ferryman.api.deps import Admin, Operator, SettingsDep, StoreDep, Viewer
from ferryman.api.subscription_schemas import (
    DeliveryDetail,
    DeliveryList,
    DeliveryPublic,
    Redelivered,
    SubscriptionCreated,
    SubscriptionList,
    SubscriptionPublic,
    TestRequest,
    TestResult,
)
from ferryman.http import destination_policy, redact_url
from ferryman.notify.formats import FormatContext
from ferryman.services import deliveries
from ferryman.services import subscriptions as subs
from ferryman.services.auth import Principal, Role

router = APIRouter(tags=["subscriptions"])

MAX_INT = 2**31 - 1
SubRef = Annotated[
    str,
    Path(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="A subscription's id or name",
    ),
]
DeliveryId = Annotated[int, Path(ge=1, le=MAX_INT, description="A delivery's id")]


_404: dict[int | str, dict[str, Any]] = {404: {"description": "no such subscription"}}
_WRITE: dict[int | str, dict[str, Any]] = {
    404: {"description": "no such subscription"},
    409: {"description": "the name is taken, or the subscription comes from the file"},
}


def shown(record: dict[str, Any], principal: Principal) -> SubscriptionPublic:
    """A subscription as ``principal`` may see it: the full URL for admins,
    only its origin (``scheme://host[:port]/…``) for everyone else."""
    if principal.role != Role.ADMIN:
        record = {**record, "url": redact_url(record["url"])}
    return SubscriptionPublic.model_validate(record)


@router.get("/subscriptions", response_model=SubscriptionList, summary="List subscriptions")
def list_subscriptions(principal: Viewer, store: StoreDep) -> SubscriptionList:
    with store.read() as conn:
        items = subs.list_subscriptions(conn)
    return SubscriptionList(items=[shown(i, principal) for i in items])


@router.post(
    "/subscriptions",
    status_code=201,
    response_model=SubscriptionCreated,
    summary="Subscribe a URL to events (admins); the secret is shown only in this answer",
    responses={409: {"description": "a subscription with this name exists"}},
)
def create_subscription(
    body: subs.SubscriptionCreate, _: Admin, store: StoreDep, settings: SettingsDep
) -> SubscriptionCreated:
    with store.write() as conn:
        record, secret = subs.create_subscription(conn, body, policy=destination_policy(settings))
    return SubscriptionCreated(**record, secret=secret)


@router.get(
    "/subscriptions/{ref}",
    response_model=SubscriptionPublic,
    summary="Get a subscription (by id or name)",
    responses=_404,
)
def get_subscription(ref: SubRef, principal: Viewer, store: StoreDep) -> SubscriptionPublic:
    with store.read() as conn:
        return shown(subs.get_subscription(conn, ref), principal)


@router.patch(
    "/subscriptions/{ref}",
    response_model=SubscriptionPublic,
    summary="Change a subscription (admins): filters, URL, format, secret, headers, enabled",
    responses=_WRITE,
)
def update_subscription(
    ref: SubRef, body: subs.SubscriptionUpdate, _: Admin, store: StoreDep, settings: SettingsDep
) -> SubscriptionPublic:
    with store.write() as conn:
        record = subs.update_subscription(conn, ref, body, policy=destination_policy(settings))
    return SubscriptionPublic.model_validate(record)


@router.delete(
    "/subscriptions/{ref}",
    status_code=204,
    summary="Delete a subscription and its deliveries (admins)",
    responses=_WRITE,
)
def delete_subscription(ref: SubRef, _: Admin, store: StoreDep) -> Response:
    with store.write() as conn:
        subs.delete_subscription(conn, ref)
    return Response(status_code=204)


@router.post(
    "/subscriptions/{ref}/test",
    response_model=TestResult,
    summary="Send a sample event now and show the receiver's answer (admins)",
    responses={**_404, 422: {"description": "the format has no equivalent of this event type"}},
)
def test_subscription(
    ref: SubRef,
    _: Admin,
    store: StoreDep,
    settings: SettingsDep,
    body: TestRequest | None = None,
) -> TestResult:
    event_type = (body or TestRequest()).event_type
    with store.read() as conn:
        res = deliveries.send_test(
            conn,
            ref,
            policy=destination_policy(settings),
            event_type=event_type.value,
            timeout=settings.delivery.timeout,
            ctx=FormatContext(settings.base_url),
        )
    return TestResult(
        event_id=res.event_id,
        ok=res.ok,
        status=res.status,
        latency_ms=res.latency_ms,
        response=res.response,
        error=res.error,
    )


@router.post(
    "/subscriptions/{ref}/redeliver",
    response_model=Redelivered,
    summary="Queue every dead-lettered delivery of a subscription again (operators)",
    responses=_404,
)
def redeliver_subscription(ref: SubRef, _: Operator, store: StoreDep) -> Redelivered:
    with store.write() as conn:
        return Redelivered(queued=deliveries.redeliver_dead(conn, ref))


@router.get(
    "/deliveries",
    response_model=DeliveryList,
    summary="List deliveries, newest first (filter by subscription, state, run)",
    responses=_404,
)
def list_deliveries(
    _: Viewer,
    store: StoreDep,
    subscription: Annotated[
        str | None, Query(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    ] = None,
    state: Annotated[str | None, Query(pattern="^(pending|delivered|dead)$")] = None,
    run_id: Annotated[str | None, Query(pattern="^[0-9a-f]{32}$")] = None,
    before: Annotated[int | None, Query(ge=1, le=MAX_INT)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> DeliveryList:
    with store.read() as conn:
        items = deliveries.list_deliveries(
            conn, subscription=subscription, state=state, run_id=run_id, before=before, limit=limit
        )
    return DeliveryList(
        items=[DeliveryPublic.model_validate(i) for i in items],
        next_before=items[-1]["id"] if len(items) == limit else None,
    )


@router.get(
    "/deliveries/{delivery_id}",
    response_model=DeliveryDetail,
    summary="A delivery and every attempt of it (status, latency, error, response)",
    responses={404: {"description": "no such delivery"}},
)
def get_delivery(delivery_id: DeliveryId, _: Viewer, store: StoreDep) -> DeliveryDetail:
    with store.read() as conn:
        return DeliveryDetail.model_validate(deliveries.get_delivery(conn, delivery_id))


@router.post(
    "/deliveries/{delivery_id}/redeliver",
    response_model=Redelivered,
    summary="Queue a dead-lettered (or delivered) delivery again, with a fresh budget (operators)",
    responses={404: {"description": "no such delivery"}},
)
def redeliver(delivery_id: DeliveryId, _: Operator, store: StoreDep) -> Redelivered:
    with store.write() as conn:
        deliveries.get_delivery(conn, delivery_id)  # 404 when absent
        return Redelivered(queued=deliveries.redeliver(conn, [delivery_id]))

"""The requests of the administration API: users, API tokens, subscriptions
and deliveries (shared by both clients, like ``calls``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ferryman.api.accounts import (
    ApiTokenCreate,
    ApiTokenCreated,
    ApiTokenPublic,
    UserCreate,
    UserPublic,
    UserUpdate,
)
from ferryman.api.subscription_schemas import (
    DeliveryDetail,
    DeliveryList,
    Redelivered,
    SubscriptionCreated,
    SubscriptionList,
    SubscriptionPublic,
    TestResult,
)
from ferryman.client.calls import Call, query, segment


class Unset:
    """The type of ``UNSET``."""

    def __repr__(self) -> str:
        return "UNSET"


#: "Leave unchanged": the default of ``update_user``'s arguments, where ``None``
#: is a value (``slack_user_id=None`` unlinks Slack).
UNSET: Any = Unset()


def changes(**kwargs: Any) -> dict[str, Any]:
    """Only the fields given (``UNSET`` means: leave unchanged)."""
    return {k: v for k, v in kwargs.items() if v is not UNSET}


class AccountCalls:
    """Requests of the user and API-token operations (admins; tokens: owners too)."""

    @staticmethod
    def list_users() -> Call[list[UserPublic]]:
        return Call("GET", "/users", list[UserPublic])

    @staticmethod
    def create_user(
        username: str, role: str, password: str | None, slack_user_id: str | None
    ) -> Call[UserPublic]:
        body = UserCreate.model_validate(
            {
                "username": username,
                "role": role,
                "password": password,
                "slack_user_id": slack_user_id,
            }
        )
        return Call("POST", "/users", UserPublic, json=body.model_dump(mode="json"))

    @staticmethod
    def get_user(user_id: int) -> Call[UserPublic]:
        return Call("GET", f"/users/{int(user_id)}", UserPublic)

    @staticmethod
    def update_user(user_id: int, fields: dict[str, Any]) -> Call[UserPublic]:
        body = UserUpdate.model_validate(fields)
        return Call(
            "PATCH",
            f"/users/{int(user_id)}",
            UserPublic,
            json=body.model_dump(mode="json", exclude_unset=True),
        )

    @staticmethod
    def delete_user(user_id: int) -> Call[None]:
        return Call("DELETE", f"/users/{int(user_id)}", None)

    @staticmethod
    def create_token(
        name: str, user_id: int | None, expires_in_days: int | None
    ) -> Call[ApiTokenCreated]:
        body = ApiTokenCreate(name=name, user_id=user_id, expires_in_days=expires_in_days)
        return Call("POST", "/tokens", ApiTokenCreated, json=body.model_dump(mode="json"))

    @staticmethod
    def list_tokens(user_id: int | None) -> Call[list[ApiTokenPublic]]:
        return Call("GET", "/tokens", list[ApiTokenPublic], params=query(user_id=user_id))

    @staticmethod
    def get_token(token_id: str) -> Call[ApiTokenPublic]:
        return Call("GET", f"/tokens/{segment(token_id)}", ApiTokenPublic)

    @staticmethod
    def revoke_token(token_id: str) -> Call[ApiTokenPublic]:
        return Call("DELETE", f"/tokens/{segment(token_id)}", ApiTokenPublic)


def subscription_body(
    name: str | None,
    url: str | None,
    format: str | None,
    event_types: Iterable[str] | None,
    namespaces: Iterable[str] | None,
    pipelines: Iterable[str] | None,
    labels: Mapping[str, str] | None,
    headers: Mapping[str, str] | None,
    secret: str | None,
    enabled: bool | None,
) -> dict[str, Any]:
    """The JSON body of a subscription create or change: only the fields given."""
    body: dict[str, Any] = {
        "name": name, "url": url, "format": format,
        "event_types": list(event_types) if event_types is not None else None,
        "namespaces": list(namespaces) if namespaces is not None else None,
        "pipelines": list(pipelines) if pipelines is not None else None,
        "labels": dict(labels) if labels is not None else None,
        "headers": dict(headers) if headers is not None else None,
        "secret": secret, "enabled": enabled,
    }  # fmt: skip
    return {k: v for k, v in body.items() if v is not None}


class SubscriptionCalls:
    """The requests of the subscriptions and deliveries API."""

    @staticmethod
    def create(body: dict[str, Any]) -> Call[SubscriptionCreated]:
        return Call("POST", "/subscriptions", SubscriptionCreated, json=body)

    @staticmethod
    def list_all() -> Call[SubscriptionList]:
        return Call("GET", "/subscriptions", SubscriptionList)

    @staticmethod
    def get(ref: str) -> Call[SubscriptionPublic]:
        return Call("GET", f"/subscriptions/{segment(ref)}", SubscriptionPublic)

    @staticmethod
    def update(ref: str, body: dict[str, Any]) -> Call[SubscriptionPublic]:
        return Call("PATCH", f"/subscriptions/{segment(ref)}", SubscriptionPublic, json=body)

    @staticmethod
    def delete(ref: str) -> Call[None]:
        return Call("DELETE", f"/subscriptions/{segment(ref)}", None)

    @staticmethod
    def test(ref: str, event_type: str) -> Call[TestResult]:
        return Call(
            "POST",
            f"/subscriptions/{segment(ref)}/test",
            TestResult,
            json={"event_type": event_type},
        )

    @staticmethod
    def deliveries(
        subscription: str | None, state: str | None, run_id: str | None, before: int | None,
        limit: int,
    ) -> Call[DeliveryList]:  # fmt: skip
        return Call(
            "GET",
            "/deliveries",
            DeliveryList,
            params=query(
                subscription=subscription, state=state, run_id=run_id, before=before, limit=limit
            ),
        )

    @staticmethod
    def get_delivery(delivery_id: int) -> Call[DeliveryDetail]:
        return Call("GET", f"/deliveries/{int(delivery_id)}", DeliveryDetail)

    @staticmethod
    def redeliver(delivery_id: int) -> Call[Redelivered]:
        return Call("POST", f"/deliveries/{int(delivery_id)}/redeliver", Redelivered)

    @staticmethod
    def redeliver_dead(subscription: str) -> Call[Redelivered]:
        return Call("POST", f"/subscriptions/{segment(subscription)}/redeliver", Redelivered)

"""The administration methods of ``AsyncClient``: subscriptions and deliveries,
users and API tokens."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TypeVar

from ferryman.api.accounts import ApiTokenCreated, ApiTokenPublic, UserPublic
from ferryman.api.subscription_schemas import (
    DeliveryDetail,
    DeliveryList,
    Redelivered,
    SubscriptionCreated,
    SubscriptionList,
    SubscriptionPublic,
    TestResult,
)
from ferryman.client.admin_calls import (
    UNSET,
    AccountCalls,
    SubscriptionCalls,
    changes,
    subscription_body,
)
from ferryman.client.calls import Call

T = TypeVar("T")


class AsyncAdmin:
    """Subscriptions, deliveries, users and API tokens (mixed into
    ``AsyncClient``, which sends the requests), as coroutines."""

    async def send(self, call: Call[T]) -> T:
        """Send one request (``AsyncClient.send``)."""
        raise NotImplementedError

    # -- subscriptions and deliveries ------------------------------------------

    async def create_subscription(
        self,
        name: str,
        url: str,
        *,
        format: str = "ferryman",
        event_types: Iterable[str] | None = None,
        namespaces: Iterable[str] | None = None,
        pipelines: Iterable[str] | None = None,
        labels: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        secret: str | None = None,
        enabled: bool = True,
    ) -> SubscriptionCreated:
        """Subscribe ``url`` to events (admins). The answer holds the signing
        secret: it is shown only this once."""
        body = subscription_body(name, url, format, event_types, namespaces, pipelines, labels,
                                 headers, secret, enabled)  # fmt: skip
        return await self.send(SubscriptionCalls.create(body))

    async def list_subscriptions(self) -> SubscriptionList:
        """Every subscription (without secrets)."""
        return await self.send(SubscriptionCalls.list_all())

    async def get_subscription(self, ref: str) -> SubscriptionPublic:
        """A subscription by id or name."""
        return await self.send(SubscriptionCalls.get(ref))

    async def update_subscription(
        self,
        ref: str,
        *,
        url: str | None = None,
        format: str | None = None,
        event_types: Iterable[str] | None = None,
        namespaces: Iterable[str] | None = None,
        pipelines: Iterable[str] | None = None,
        labels: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        secret: str | None = None,
        enabled: bool | None = None,
    ) -> SubscriptionPublic:
        """Change a subscription (admins); only the arguments given change."""
        body = subscription_body(None, url, format, event_types, namespaces, pipelines, labels,
                                 headers, secret, enabled)  # fmt: skip
        return await self.send(SubscriptionCalls.update(ref, body))

    async def delete_subscription(self, ref: str) -> None:
        """Delete a subscription and its deliveries (admins)."""
        await self.send(SubscriptionCalls.delete(ref))

    async def test_subscription(self, ref: str, event_type: str = "RunSucceeded") -> TestResult:
        """Send a sample event now and return the receiver's answer (admins)."""
        return await self.send(SubscriptionCalls.test(ref, event_type))

    async def list_deliveries(
        self,
        *,
        subscription: str | None = None,
        state: str | None = None,
        run_id: str | None = None,
        before: int | None = None,
        limit: int = 100,
    ) -> DeliveryList:
        """Deliveries, newest first (``state``: pending, delivered or dead);
        pass ``next_before`` as ``before`` for the next page."""
        return await self.send(
            SubscriptionCalls.deliveries(subscription, state, run_id, before, limit)
        )

    async def get_delivery(self, delivery_id: int) -> DeliveryDetail:
        """A delivery and every attempt of it."""
        return await self.send(SubscriptionCalls.get_delivery(delivery_id))

    async def redeliver(self, delivery_id: int) -> Redelivered:
        """Queue a dead-lettered delivery again (operators)."""
        return await self.send(SubscriptionCalls.redeliver(delivery_id))

    async def redeliver_dead(self, subscription: str) -> Redelivered:
        """Queue every dead-lettered delivery of a subscription again (operators)."""
        return await self.send(SubscriptionCalls.redeliver_dead(subscription))

    # -- users and API tokens (admins; a user may list and revoke their own tokens) --

    async def list_users(self) -> list[UserPublic]:
        """Every user (admins only)."""
        return await self.send(AccountCalls.list_users())

    async def create_user(
        self,
        username: str,
        role: str,
        *,
        password: str | None = None,
        slack_user_id: str | None = None,
    ) -> UserPublic:
        """Create a user (``role``: admin, developer, operator or viewer);
        without a password the user can only use API tokens or Slack. The
        fields are checked here first (``pydantic.ValidationError``, before
        any request)."""
        return await self.send(AccountCalls.create_user(username, role, password, slack_user_id))

    async def get_user(self, user_id: int) -> UserPublic:
        """One user by id."""
        return await self.send(AccountCalls.get_user(user_id))

    async def update_user(
        self,
        user_id: int,
        *,
        password: str | None = UNSET,
        role: str | None = UNSET,
        disabled: bool | None = UNSET,
        slack_user_id: str | None = UNSET,
    ) -> UserPublic:
        """Change only the fields given (``slack_user_id=None`` unlinks Slack);
        a new password logs the user out everywhere (access tokens issued
        before it stop working; API tokens stay valid)."""
        fields = changes(
            password=password, role=role, disabled=disabled, slack_user_id=slack_user_id
        )
        return await self.send(AccountCalls.update_user(user_id, fields))

    async def delete_user(self, user_id: int) -> None:
        """Delete a user and revoke their API tokens."""
        await self.send(AccountCalls.delete_user(user_id))

    async def create_token(
        self, name: str, *, user_id: int | None = None, expires_in_days: int | None = None
    ) -> ApiTokenCreated:
        """A new API token (admins) for ``user_id`` (default: yourself);
        ``.token`` is shown only in this answer."""
        return await self.send(AccountCalls.create_token(name, user_id, expires_in_days))

    async def list_tokens(self, *, user_id: int | None = None) -> list[ApiTokenPublic]:
        """API tokens: every one for admins, your own otherwise."""
        return await self.send(AccountCalls.list_tokens(user_id))

    async def get_token(self, token_id: str) -> ApiTokenPublic:
        """One API token's record (never the token itself)."""
        return await self.send(AccountCalls.get_token(token_id))

    async def revoke_token(self, token_id: str) -> ApiTokenPublic:
        """Revoke an API token (its owner or an admin)."""
        return await self.send(AccountCalls.revoke_token(token_id))

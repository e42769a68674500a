"""Python client for the ferryman REST API, using the API's own models.

>>> from ferryman.client import Client
>>> with Client("http://127.0.0.1:8787") as fm:  # doctest: +SKIP
...     fm.login("alice", "secret-password")
...     run = fm.create_run("default", "etl", {"day": "2024-05-01"}, idempotency_key="etl-0501")
...     for line in fm.follow_logs(run.id):
...         print(line.node, line.line)
...     print(fm.wait(run.id).state)

``Client`` is synchronous, ``AsyncClient`` has the same methods as coroutines
(``follow_logs`` is then an async generator). ``token`` is either a JWT from
``login`` (``POST /token``) or a long-lived API token (``fm_…``).

Every failure is raised as ``ApiError(status, code, message, details)``: the
API's error body for HTTP errors, ``status`` 0 when the server could not be
reached or did not answer in time.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, TypeAdapter

from ferryman.api.accounts import (
    ApiTokenCreate,
    ApiTokenCreated,
    ApiTokenPublic,
    UserCreate,
    UserPublic,
    UserUpdate,
)
from ferryman.api.schemas import (
    EventList,
    LogLinePublic,
    LogList,
    PipelineDetail,
    PipelineList,
    PipelineRegistered,
    RunCounts,
    RunCreate,
    RunCreated,
    RunDetail,
    RunList,
    RunOutputs,
    RunPublic,
    VersionList,
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
from ferryman.domain.spec import PipelineSpec
from ferryman.domain.states import RunState

__all__ = ["ApiError", "AsyncClient", "Client"]

T = TypeVar("T")

#: The server sends a keep-alive at least every 15 s on a log stream.
STREAM_READ_TIMEOUT = 60.0
MAX_STREAM_RECONNECTS = 5


class ApiError(Exception):
    """A request failed: the API's ``{"error": {code, message, details}}``, or
    ``status`` 0 with code ``connection_error``/``timeout`` when there was no answer."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}" if status else f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details


def _error_of(resp: httpx.Response) -> ApiError:
    try:
        err = resp.json()["error"]
        return ApiError(
            resp.status_code,
            str(err.get("code") or "error"),
            str(err.get("message") or resp.reason_phrase),
            err.get("details"),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        text = resp.text.strip()[:500]
        code = resp.reason_phrase.lower().replace(" ", "_") or "error"
        return ApiError(resp.status_code, code, text or resp.reason_phrase)


def _transport_error(exc: httpx.TransportError) -> ApiError:
    if isinstance(exc, httpx.TimeoutException):
        return ApiError(0, "timeout", f"no answer in time: {exc}")
    return ApiError(0, "connection_error", f"cannot reach the server: {exc}")


def _seg(value: str) -> str:
    return quote(value, safe="")


def _when(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.isoformat()


Params = list[tuple[str, str | int | float | bool | None]]


@dataclass(frozen=True)
class _Call(Generic[T]):
    """One request, built once and sent by either client."""

    method: str
    path: str
    model: Any  # a pydantic model class, or a type such as list[Model]
    params: Params = field(default_factory=list)
    json: Any = None
    data: dict[str, str] | None = None
    headers: dict[str, str] = field(default_factory=dict)


_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def _parse(call: _Call[T], content: bytes) -> T:
    """The response body as ``call.model`` (a model class or e.g. ``list[Model]``)."""
    model = call.model
    if model is None:
        return None  # type: ignore[return-value]
    if isinstance(model, type) and issubclass(model, BaseModel):
        return model.model_validate_json(content)  # type: ignore[return-value]
    adapter = _ADAPTERS.get(model)
    if adapter is None:
        adapter = _ADAPTERS[model] = TypeAdapter(model)
    result: T = adapter.validate_json(content)
    return result


def _q(**kwargs: Any) -> Params:
    out: Params = []
    for k, v in kwargs.items():
        if v is None:
            continue
        if isinstance(v, (list, tuple)):
            out.extend((k, x) for x in v)
        else:
            out.append((k, v))
    return out


def _spec_json(spec: PipelineSpec | Mapping[str, Any] | str) -> Any:
    if isinstance(spec, str):
        from ferryman.dsl.loader import load_pipeline

        spec = load_pipeline(spec)
    if isinstance(spec, PipelineSpec):
        return spec.model_dump(mode="json")
    return dict(spec)


def _label_filters(labels: Mapping[str, str] | Iterable[str] | None) -> list[str] | None:
    if labels is None:
        return None
    if isinstance(labels, Mapping):
        return [f"{k}:{v}" for k, v in labels.items()]
    return list(labels)


class _Calls:
    """The request of every API operation (shared by both clients)."""

    @staticmethod
    def register_pipeline(
        namespace: str, spec: PipelineSpec | Mapping[str, Any] | str
    ) -> _Call[PipelineRegistered]:
        return _Call(
            "POST",
            f"/namespaces/{_seg(namespace)}/pipelines",
            PipelineRegistered,
            json=_spec_json(spec),
        )

    @staticmethod
    def list_pipelines(namespace: str) -> _Call[PipelineList]:
        return _Call("GET", f"/namespaces/{_seg(namespace)}/pipelines", PipelineList)

    @staticmethod
    def get_pipeline(namespace: str, name: str, version: str | None) -> _Call[PipelineDetail]:
        return _Call(
            "GET",
            f"/namespaces/{_seg(namespace)}/pipelines/{_seg(name)}",
            PipelineDetail,
            params=_q(version=version),
        )

    @staticmethod
    def list_versions(namespace: str, name: str) -> _Call[VersionList]:
        return _Call(
            "GET", f"/namespaces/{_seg(namespace)}/pipelines/{_seg(name)}/versions", VersionList
        )

    @staticmethod
    def create_run(
        namespace: str,
        pipeline: str,
        body: RunCreate,
        idempotency_key: str | None,
    ) -> _Call[RunCreated]:
        return _Call(
            "POST",
            f"/namespaces/{_seg(namespace)}/pipelines/{_seg(pipeline)}/runs",
            RunCreated,
            json=body.model_dump(mode="json", exclude_none=True),
            headers={"Idempotency-Key": idempotency_key} if idempotency_key else {},
        )

    @staticmethod
    def create_run_compat(
        namespace: str,
        pipeline: str,
        params: Mapping[str, Any] | None,
        webhook_uri: str | None,
        idempotency_key: str | None,
    ) -> _Call[RunCreated]:
        body = dict(params or {})
        if webhook_uri is not None:
            body["webhook_uri"] = webhook_uri
        return _Call(
            "POST",
            f"/{_seg(namespace)}/pipelines/run/{_seg(pipeline)}/",
            RunCreated,
            json=body,
            headers={"Idempotency-Key": idempotency_key} if idempotency_key else {},
        )

    @staticmethod
    def list_runs(
        namespace: str | None,
        pipeline: str | None,
        state: RunState | str | Iterable[RunState | str] | None,
        labels: Mapping[str, str] | Iterable[str] | None,
        created_after: dt.datetime | None,
        created_before: dt.datetime | None,
        limit: int,
        cursor: str | None,
    ) -> _Call[RunList]:
        states = [state] if isinstance(state, str) else (list(state) if state else None)
        return _Call(
            "GET",
            "/runs",
            RunList,
            params=_q(
                namespace=namespace,
                pipeline=pipeline,
                state=[str(s) for s in states] if states else None,
                label=_label_filters(labels),
                created_after=_when(created_after),
                created_before=_when(created_before),
                limit=limit,
                cursor=cursor,
            ),
        )

    @staticmethod
    def count_runs(
        namespace: str | None, pipeline: str | None, labels: Mapping[str, str] | None
    ) -> _Call[RunCounts]:
        return _Call(
            "GET",
            "/runs/counts",
            RunCounts,
            params=_q(namespace=namespace, pipeline=pipeline, label=_label_filters(labels)),
        )

    @staticmethod
    def get_run(run_id: str) -> _Call[RunDetail]:
        return _Call("GET", f"/runs/{_seg(run_id)}", RunDetail)

    @staticmethod
    def cancel_run(run_id: str) -> _Call[RunPublic]:
        return _Call("POST", f"/runs/{_seg(run_id)}/cancel", RunPublic)

    @staticmethod
    def rerun(run_id: str) -> _Call[RunCreated]:
        return _Call("POST", f"/runs/{_seg(run_id)}/rerun", RunCreated)

    @staticmethod
    def outputs(run_id: str) -> _Call[RunOutputs]:
        return _Call("GET", f"/runs/{_seg(run_id)}/outputs", RunOutputs)

    @staticmethod
    def logs(
        run_id: str, step: str | None, after: int, limit: int, tail: int | None
    ) -> _Call[LogList]:
        return _Call(
            "GET",
            f"/runs/{_seg(run_id)}/logs",
            LogList,
            params=_q(step=step, after=after, limit=limit, tail=tail),
        )

    @staticmethod
    def events(run_id: str, after: int, limit: int) -> _Call[EventList]:
        return _Call(
            "GET", f"/runs/{_seg(run_id)}/events", EventList, params=_q(after=after, limit=limit)
        )


class _AccountCalls:
    """Requests of the user and API-token operations (admins; tokens: owners too)."""

    @staticmethod
    def list_users() -> _Call[list[UserPublic]]:
        return _Call("GET", "/users", list[UserPublic])

    @staticmethod
    def create_user(
        username: str, role: str, password: str | None, slack_user_id: str | None
    ) -> _Call[UserPublic]:
        body = UserCreate.model_validate(
            {
                "username": username,
                "role": role,
                "password": password,
                "slack_user_id": slack_user_id,
            }
        )
        return _Call("POST", "/users", UserPublic, json=body.model_dump(mode="json"))

    @staticmethod
    def get_user(user_id: int) -> _Call[UserPublic]:
        return _Call("GET", f"/users/{int(user_id)}", UserPublic)

    @staticmethod
    def update_user(user_id: int, changes: dict[str, Any]) -> _Call[UserPublic]:
        body = UserUpdate.model_validate(changes)
        return _Call(
            "PATCH",
            f"/users/{int(user_id)}",
            UserPublic,
            json=body.model_dump(mode="json", exclude_unset=True),
        )

    @staticmethod
    def delete_user(user_id: int) -> _Call[None]:
        return _Call("DELETE", f"/users/{int(user_id)}", None)

    @staticmethod
    def create_token(
        name: str, user_id: int | None, expires_in_days: int | None
    ) -> _Call[ApiTokenCreated]:
        body = ApiTokenCreate(name=name, user_id=user_id, expires_in_days=expires_in_days)
        return _Call("POST", "/tokens", ApiTokenCreated, json=body.model_dump(mode="json"))

    @staticmethod
    def list_tokens(user_id: int | None) -> _Call[list[ApiTokenPublic]]:
        return _Call("GET", "/tokens", list[ApiTokenPublic], params=_q(user_id=user_id))

    @staticmethod
    def get_token(token_id: str) -> _Call[ApiTokenPublic]:
        return _Call("GET", f"/tokens/{_seg(token_id)}", ApiTokenPublic)

    @staticmethod
    def revoke_token(token_id: str) -> _Call[ApiTokenPublic]:
        return _Call("DELETE", f"/tokens/{_seg(token_id)}", ApiTokenPublic)


def _changes(**kwargs: Any) -> dict[str, Any]:
    """Only the fields given (``UNSET`` means: leave unchanged)."""
    return {k: v for k, v in kwargs.items() if v is not UNSET}


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


class _SubCalls:
    """The requests of the subscriptions and deliveries API."""

    @staticmethod
    def create(body: dict[str, Any]) -> _Call[SubscriptionCreated]:
        return _Call("POST", "/subscriptions", SubscriptionCreated, json=body)

    @staticmethod
    def update(ref: str, body: dict[str, Any]) -> _Call[SubscriptionPublic]:
        return _Call("PATCH", f"/subscriptions/{_seg(ref)}", SubscriptionPublic, json=body)

    @staticmethod
    def test(ref: str, event_type: str) -> _Call[TestResult]:
        return _Call(
            "POST", f"/subscriptions/{_seg(ref)}/test", TestResult, json={"event_type": event_type}
        )

    @staticmethod
    def deliveries(
        subscription: str | None, state: str | None, run_id: str | None, before: int | None,
        limit: int,
    ) -> _Call[DeliveryList]:  # fmt: skip
        return _Call(
            "GET",
            "/deliveries",
            DeliveryList,
            params=_q(
                subscription=subscription, state=state, run_id=run_id, before=before, limit=limit
            ),
        )


def _sub_body(
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


def _run_create(
    params: Mapping[str, Any] | None,
    labels: Mapping[str, str] | None,
    webhook_url: str | None,
    slack_channel: str | None,
    slack_thread: str | None,
    timeout: float | None,
) -> RunCreate:
    return RunCreate.model_validate(
        {
            "params": dict(params or {}),
            "labels": dict(labels or {}),
            "webhook_url": webhook_url,
            "slack_channel": slack_channel,
            "slack_thread": slack_thread,
            "timeout": timeout,
        }
    )


@dataclass
class _SseEvent:
    event: str = "message"
    data: list[str] = field(default_factory=list)
    id: str | None = None


class _SseParser:
    """Turns the lines of a ``text/event-stream`` into events."""

    def __init__(self) -> None:
        self._cur = _SseEvent()

    def feed(self, line: str) -> _SseEvent | None:
        if not line:
            ev, self._cur = self._cur, _SseEvent()
            return ev if (ev.data or ev.event != "message") else None
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._cur.data.append(value)
        elif name == "event":
            self._cur.event = value
        elif name == "id":
            self._cur.id = value
        return None


def _stream_headers(last: int) -> dict[str, str]:
    return {"Accept": "text/event-stream", **({"Last-Event-ID": str(last)} if last else {})}


class _Base:
    def __init__(self, base_url: str, token: str | None) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token

    @property
    def token(self) -> str | None:
        """The bearer token sent with every request (a JWT or an API token)."""
        return self._token

    @token.setter
    def token(self, value: str | None) -> None:
        self._token = value

    def _auth(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = dict(extra or {})
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers


class Client(_Base):
    """Synchronous client. Use as a context manager, or call ``close()``."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        verify: bool = True,
    ) -> None:
        super().__init__(base_url, token)
        self._http = httpx.Client(
            base_url=self.base_url, timeout=timeout, transport=transport, verify=verify
        )
        self._timeout = timeout

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def _request(self, call: _Call[Any]) -> httpx.Response:
        try:
            resp = self._http.request(
                call.method,
                call.path,
                params=call.params or None,
                json=call.json,
                data=call.data,
                headers=self._auth(call.headers),
            )
        except httpx.TransportError as exc:
            raise _transport_error(exc) from None
        if resp.is_error:
            raise _error_of(resp)
        return resp

    def _send(self, call: _Call[T]) -> T:
        return _parse(call, self._request(call).content)

    def _get_json(self, path: str) -> dict[str, Any]:
        data: dict[str, Any] = self._request(_Call("GET", path, BaseModel)).json()
        return data

    # -- auth and health ------------------------------------------------------

    def login(self, username: str, password: str) -> str:
        """Log in (``POST /token``); the JWT is used for every later request."""
        call: _Call[Any] = _Call(
            "POST", "/token", BaseModel, data={"username": username, "password": password}
        )
        token = str(self._request(call).json()["access_token"])
        self._token = token
        return token

    def me(self) -> dict[str, Any]:
        """Who the token belongs to (``GET /me``)."""
        return self._get_json("/me")

    def health(self) -> dict[str, Any]:
        """``GET /health`` (no authentication)."""
        return self._get_json("/health")

    # -- pipelines --------------------------------------------------------------

    def register_pipeline(
        self, namespace: str, spec: PipelineSpec | Mapping[str, Any] | str
    ) -> PipelineRegistered:
        """Register a pipeline (a spec, its JSON, or a reference such as
        ``path/to/file.py:name`` compiled locally); ``created`` is False when
        the definition was already stored."""
        return self._send(_Calls.register_pipeline(namespace, spec))

    def list_pipelines(self, namespace: str) -> PipelineList:
        """The pipelines of a namespace."""
        return self._send(_Calls.list_pipelines(namespace))

    def get_pipeline(self, namespace: str, name: str, version: str | None = None) -> PipelineDetail:
        """A pipeline's newest version (or ``version``): parameters and steps."""
        return self._send(_Calls.get_pipeline(namespace, name, version))

    def list_versions(self, namespace: str, name: str) -> VersionList:
        """The versions of a pipeline, newest first."""
        return self._send(_Calls.list_versions(namespace, name))

    # -- runs ------------------------------------------------------------------------

    def create_run(
        self,
        namespace: str,
        pipeline: str,
        params: Mapping[str, Any] | None = None,
        *,
        labels: Mapping[str, str] | None = None,
        webhook_url: str | None = None,
        slack_channel: str | None = None,
        slack_thread: str | None = None,
        timeout: float | None = None,
        idempotency_key: str | None = None,
    ) -> RunCreated:
        """Start a run; with an ``idempotency_key`` seen before, the earlier run
        comes back with ``created=False``."""
        body = _run_create(params, labels, webhook_url, slack_channel, slack_thread, timeout)
        return self._send(_Calls.create_run(namespace, pipeline, body, idempotency_key))

    def create_run_compat(
        self,
        namespace: str,
        pipeline: str,
        params: Mapping[str, Any] | None = None,
        *,
        webhook_uri: str | None = None,
        idempotency_key: str | None = None,
    ) -> RunCreated:
        """Start a run through the compatibility route
        (``POST /{namespace}/pipelines/run/{pipeline}/``)."""
        call = _Calls.create_run_compat(namespace, pipeline, params, webhook_uri, idempotency_key)
        return self._send(call)

    def list_runs(
        self,
        *,
        namespace: str | None = None,
        pipeline: str | None = None,
        state: RunState | str | Iterable[RunState | str] | None = None,
        labels: Mapping[str, str] | Iterable[str] | None = None,
        created_after: dt.datetime | None = None,
        created_before: dt.datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> RunList:
        """One page of runs, newest first; pass ``next_cursor`` as ``cursor``."""
        return self._send(
            _Calls.list_runs(
                namespace, pipeline, state, labels, created_after, created_before, limit, cursor
            )
        )

    def iter_runs(
        self,
        *,
        namespace: str | None = None,
        pipeline: str | None = None,
        state: RunState | str | Iterable[RunState | str] | None = None,
        labels: Mapping[str, str] | Iterable[str] | None = None,
        created_after: dt.datetime | None = None,
        created_before: dt.datetime | None = None,
        page_size: int = 100,
    ) -> Iterator[RunPublic]:
        """Every matching run, newest first, fetching pages as needed."""
        cursor: str | None = None
        while True:
            page = self.list_runs(
                namespace=namespace,
                pipeline=pipeline,
                state=state,
                labels=labels,
                created_after=created_after,
                created_before=created_before,
                limit=page_size,
                cursor=cursor,
            )
            yield from page.items
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def count_runs(
        self,
        *,
        namespace: str | None = None,
        pipeline: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> RunCounts:
        """How many runs are in each state."""
        return self._send(_Calls.count_runs(namespace, pipeline, labels))

    def get_run(self, run_id: str) -> RunDetail:
        """A run and its steps (``run_id``: full, or a unique prefix of 6+)."""
        return self._send(_Calls.get_run(run_id))

    def cancel_run(self, run_id: str) -> RunPublic:
        """Ask a run to stop (``ApiError`` 409 if it has already ended)."""
        return self._send(_Calls.cancel_run(run_id))

    def rerun(self, run_id: str) -> RunCreated:
        """Re-run a failed or cancelled run from its failed steps."""
        return self._send(_Calls.rerun(run_id))

    def outputs(self, run_id: str) -> RunOutputs:
        """The outputs of the steps of a run."""
        return self._send(_Calls.outputs(run_id))

    def logs(
        self,
        run_id: str,
        *,
        step: str | None = None,
        after: int = 0,
        limit: int = 1000,
        tail: int | None = None,
    ) -> LogList:
        """Log lines after ``after`` (or the last ``tail`` lines)."""
        return self._send(_Calls.logs(run_id, step, after, limit, tail))

    def events(self, run_id: str, *, after: int = 0, limit: int = 1000) -> EventList:
        """Lifecycle events of a run after sequence number ``after``."""
        return self._send(_Calls.events(run_id, after, limit))

    # -- subscriptions and deliveries ------------------------------------------

    def create_subscription(
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
        body = _sub_body(name, url, format, event_types, namespaces, pipelines, labels, headers,
                         secret, enabled)  # fmt: skip
        return self._send(_SubCalls.create(body))

    def list_subscriptions(self) -> SubscriptionList:
        """Every subscription (without secrets)."""
        return self._send(_Call("GET", "/subscriptions", SubscriptionList))

    def get_subscription(self, ref: str) -> SubscriptionPublic:
        """A subscription by id or name."""
        return self._send(_Call("GET", f"/subscriptions/{_seg(ref)}", SubscriptionPublic))

    def update_subscription(
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
        body = _sub_body(None, url, format, event_types, namespaces, pipelines, labels, headers,
                         secret, enabled)  # fmt: skip
        return self._send(_SubCalls.update(ref, body))

    def delete_subscription(self, ref: str) -> None:
        """Delete a subscription and its deliveries (admins)."""
        self._request(_Call("DELETE", f"/subscriptions/{_seg(ref)}", BaseModel))

    def test_subscription(self, ref: str, event_type: str = "RunSucceeded") -> TestResult:
        """Send a sample event now and return the receiver's answer (admins)."""
        return self._send(_SubCalls.test(ref, event_type))

    def list_deliveries(
        self,
        *,
        subscription: str | None = None,
        state: str | None = None,
        run_id: str | None = None,
        before: int | None = None,
        limit: int = 100,
    ) -> DeliveryList:
        """Deliveries, newest first (``state``: pending, delivered or dead)."""
        return self._send(_SubCalls.deliveries(subscription, state, run_id, before, limit))

    def get_delivery(self, delivery_id: int) -> DeliveryDetail:
        """A delivery and every attempt of it."""
        return self._send(_Call("GET", f"/deliveries/{int(delivery_id)}", DeliveryDetail))

    def redeliver(self, delivery_id: int) -> Redelivered:
        """Queue a dead-lettered delivery again (operators)."""
        call: _Call[Redelivered] = _Call(
            "POST", f"/deliveries/{int(delivery_id)}/redeliver", Redelivered
        )
        return self._send(call)

    def redeliver_dead(self, subscription: str) -> Redelivered:
        """Queue every dead-lettered delivery of a subscription again (operators)."""
        return self._send(
            _Call("POST", f"/subscriptions/{_seg(subscription)}/redeliver", Redelivered)
        )

    def wait(self, run_id: str, *, timeout: float | None = None, poll: float = 1.0) -> RunDetail:
        """Poll until the run has ended; ``TimeoutError`` after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            run = self.get_run(run_id)
            if run.state.terminal:
                return run
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"run {run_id} still {run.state} after {timeout}s")
            time.sleep(poll)

    # -- users and API tokens (admins; a user may list and revoke their own tokens) --

    def list_users(self) -> list[UserPublic]:
        """Every user (admins only)."""
        return self._send(_AccountCalls.list_users())

    def create_user(
        self,
        username: str,
        role: str,
        *,
        password: str | None = None,
        slack_user_id: str | None = None,
    ) -> UserPublic:
        """Create a user (``role``: admin, operator or viewer); without a password
        the user can only use API tokens or Slack."""
        return self._send(_AccountCalls.create_user(username, role, password, slack_user_id))

    def get_user(self, user_id: int) -> UserPublic:
        """One user by id."""
        return self._send(_AccountCalls.get_user(user_id))

    def update_user(
        self,
        user_id: int,
        *,
        password: str | None = UNSET,
        role: str | None = UNSET,
        disabled: bool | None = UNSET,
        slack_user_id: str | None = UNSET,
    ) -> UserPublic:
        """Change only the fields given; a new password logs the user out everywhere
        (access tokens issued before it stop working; API tokens stay valid)."""
        changes = _changes(
            password=password, role=role, disabled=disabled, slack_user_id=slack_user_id
        )
        return self._send(_AccountCalls.update_user(user_id, changes))

    def delete_user(self, user_id: int) -> None:
        """Delete a user and revoke their API tokens."""
        self._send(_AccountCalls.delete_user(user_id))

    def create_token(
        self, name: str, *, user_id: int | None = None, expires_in_days: int | None = None
    ) -> ApiTokenCreated:
        """A new API token (admins); ``.token`` is shown only in this answer."""
        return self._send(_AccountCalls.create_token(name, user_id, expires_in_days))

    def list_tokens(self, *, user_id: int | None = None) -> list[ApiTokenPublic]:
        """API tokens: every one for admins, your own otherwise."""
        return self._send(_AccountCalls.list_tokens(user_id))

    def get_token(self, token_id: str) -> ApiTokenPublic:
        """One API token's record (never the token itself)."""
        return self._send(_AccountCalls.get_token(token_id))

    def revoke_token(self, token_id: str) -> ApiTokenPublic:
        """Revoke an API token (its owner or an admin)."""
        return self._send(_AccountCalls.revoke_token(token_id))

    def follow_logs(
        self, run_id: str, *, step: str | None = None, after: int = 0, reconnect: bool = True
    ) -> Iterator[LogLinePublic]:
        """Yield log lines as they are written until the run is over. A dropped
        connection is resumed where it stopped (``Last-Event-ID``)."""
        last, failures = after, 0
        path = f"/runs/{_seg(run_id)}/logs/stream"
        stream_timeout = httpx.Timeout(self._timeout, read=STREAM_READ_TIMEOUT)
        while True:
            try:
                with self._http.stream(
                    "GET",
                    path,
                    params=_q(step=step, after=after) or None,
                    headers=self._auth(_stream_headers(last)),
                    timeout=stream_timeout,
                ) as resp:
                    if resp.is_error:
                        resp.read()
                        raise _error_of(resp)
                    parser = _SseParser()
                    for raw in resp.iter_lines():
                        ev = parser.feed(raw)
                        if ev is None:
                            continue
                        if ev.event == "end":
                            return
                        if ev.data:
                            line = LogLinePublic.model_validate_json("\n".join(ev.data))
                            last, failures = line.id, 0
                            yield line
            except httpx.TransportError as exc:
                if not reconnect or failures >= MAX_STREAM_RECONNECTS:
                    raise _transport_error(exc) from None
            else:
                if not reconnect or failures >= MAX_STREAM_RECONNECTS:
                    raise ApiError(0, "connection_error", "the log stream ended early")
            failures += 1
            time.sleep(min(0.25 * 2**failures, 5.0))


class AsyncClient(_Base):
    """Asynchronous client: the methods of ``Client`` as coroutines. Use as an
    async context manager, or call ``aclose()``."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: bool = True,
    ) -> None:
        super().__init__(base_url, token)
        self._http = httpx.AsyncClient(
            base_url=self.base_url, timeout=timeout, transport=transport, verify=verify
        )
        self._timeout = timeout

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def _request(self, call: _Call[Any]) -> httpx.Response:
        try:
            resp = await self._http.request(
                call.method,
                call.path,
                params=call.params or None,
                json=call.json,
                data=call.data,
                headers=self._auth(call.headers),
            )
        except httpx.TransportError as exc:
            raise _transport_error(exc) from None
        if resp.is_error:
            raise _error_of(resp)
        return resp

    async def _send(self, call: _Call[T]) -> T:
        return _parse(call, (await self._request(call)).content)

    async def _get_json(self, path: str) -> dict[str, Any]:
        data: dict[str, Any] = (await self._request(_Call("GET", path, BaseModel))).json()
        return data

    # -- auth and health ------------------------------------------------------

    async def login(self, username: str, password: str) -> str:
        """Log in (``POST /token``); the JWT is used for every later request."""
        call: _Call[Any] = _Call(
            "POST", "/token", BaseModel, data={"username": username, "password": password}
        )
        token = str((await self._request(call)).json()["access_token"])
        self._token = token
        return token

    async def me(self) -> dict[str, Any]:
        """Who the token belongs to (``GET /me``)."""
        return await self._get_json("/me")

    async def health(self) -> dict[str, Any]:
        """``GET /health`` (no authentication)."""
        return await self._get_json("/health")

    # -- pipelines --------------------------------------------------------------

    async def register_pipeline(
        self, namespace: str, spec: PipelineSpec | Mapping[str, Any] | str
    ) -> PipelineRegistered:
        """Register a pipeline; ``created`` is False when it was already stored."""
        return await self._send(_Calls.register_pipeline(namespace, spec))

    async def list_pipelines(self, namespace: str) -> PipelineList:
        """The pipelines of a namespace."""
        return await self._send(_Calls.list_pipelines(namespace))

    async def get_pipeline(
        self, namespace: str, name: str, version: str | None = None
    ) -> PipelineDetail:
        """A pipeline's newest version (or ``version``): parameters and steps."""
        return await self._send(_Calls.get_pipeline(namespace, name, version))

    async def list_versions(self, namespace: str, name: str) -> VersionList:
        """The versions of a pipeline, newest first."""
        return await self._send(_Calls.list_versions(namespace, name))

    # -- runs ------------------------------------------------------------------------

    async def create_run(
        self,
        namespace: str,
        pipeline: str,
        params: Mapping[str, Any] | None = None,
        *,
        labels: Mapping[str, str] | None = None,
        webhook_url: str | None = None,
        slack_channel: str | None = None,
        slack_thread: str | None = None,
        timeout: float | None = None,
        idempotency_key: str | None = None,
    ) -> RunCreated:
        """Start a run (see ``Client.create_run``)."""
        body = _run_create(params, labels, webhook_url, slack_channel, slack_thread, timeout)
        return await self._send(_Calls.create_run(namespace, pipeline, body, idempotency_key))

    async def create_run_compat(
        self,
        namespace: str,
        pipeline: str,
        params: Mapping[str, Any] | None = None,
        *,
        webhook_uri: str | None = None,
        idempotency_key: str | None = None,
    ) -> RunCreated:
        """Start a run through the compatibility route."""
        call = _Calls.create_run_compat(namespace, pipeline, params, webhook_uri, idempotency_key)
        return await self._send(call)

    async def list_runs(
        self,
        *,
        namespace: str | None = None,
        pipeline: str | None = None,
        state: RunState | str | Iterable[RunState | str] | None = None,
        labels: Mapping[str, str] | Iterable[str] | None = None,
        created_after: dt.datetime | None = None,
        created_before: dt.datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> RunList:
        """One page of runs, newest first; pass ``next_cursor`` as ``cursor``."""
        return await self._send(
            _Calls.list_runs(
                namespace, pipeline, state, labels, created_after, created_before, limit, cursor
            )
        )

    async def iter_runs(
        self,
        *,
        namespace: str | None = None,
        pipeline: str | None = None,
        state: RunState | str | Iterable[RunState | str] | None = None,
        labels: Mapping[str, str] | Iterable[str] | None = None,
        created_after: dt.datetime | None = None,
        created_before: dt.datetime | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[RunPublic]:
        """Every matching run, newest first, fetching pages as needed."""
        cursor: str | None = None
        while True:
            page = await self.list_runs(
                namespace=namespace,
                pipeline=pipeline,
                state=state,
                labels=labels,
                created_after=created_after,
                created_before=created_before,
                limit=page_size,
                cursor=cursor,
            )
            for item in page.items:
                yield item
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    async def count_runs(
        self,
        *,
        namespace: str | None = None,
        pipeline: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> RunCounts:
        """How many runs are in each state."""
        return await self._send(_Calls.count_runs(namespace, pipeline, labels))

    async def get_run(self, run_id: str) -> RunDetail:
        """A run and its steps."""
        return await self._send(_Calls.get_run(run_id))

    async def cancel_run(self, run_id: str) -> RunPublic:
        """Ask a run to stop (``ApiError`` 409 if it has already ended)."""
        return await self._send(_Calls.cancel_run(run_id))

    async def rerun(self, run_id: str) -> RunCreated:
        """Re-run a failed or cancelled run from its failed steps."""
        return await self._send(_Calls.rerun(run_id))

    async def outputs(self, run_id: str) -> RunOutputs:
        """The outputs of the steps of a run."""
        return await self._send(_Calls.outputs(run_id))

    async def logs(
        self,
        run_id: str,
        *,
        step: str | None = None,
        after: int = 0,
        limit: int = 1000,
        tail: int | None = None,
    ) -> LogList:
        """Log lines after ``after`` (or the last ``tail`` lines)."""
        return await self._send(_Calls.logs(run_id, step, after, limit, tail))

    async def events(self, run_id: str, *, after: int = 0, limit: int = 1000) -> EventList:
        """Lifecycle events of a run after sequence number ``after``."""
        return await self._send(_Calls.events(run_id, after, limit))

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
        body = _sub_body(name, url, format, event_types, namespaces, pipelines, labels, headers,
                         secret, enabled)  # fmt: skip
        return await self._send(_SubCalls.create(body))

    async def list_subscriptions(self) -> SubscriptionList:
        """Every subscription (without secrets)."""
        return await self._send(_Call("GET", "/subscriptions", SubscriptionList))

    async def get_subscription(self, ref: str) -> SubscriptionPublic:
        """A subscription by id or name."""
        return await self._send(_Call("GET", f"/subscriptions/{_seg(ref)}", SubscriptionPublic))

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
        body = _sub_body(None, url, format, event_types, namespaces, pipelines, labels, headers,
                         secret, enabled)  # fmt: skip
        return await self._send(_SubCalls.update(ref, body))

    async def delete_subscription(self, ref: str) -> None:
        """Delete a subscription and its deliveries (admins)."""
        await self._request(_Call("DELETE", f"/subscriptions/{_seg(ref)}", BaseModel))

    async def test_subscription(self, ref: str, event_type: str = "RunSucceeded") -> TestResult:
        """Send a sample event now and return the receiver's answer (admins)."""
        return await self._send(_SubCalls.test(ref, event_type))

    async def list_deliveries(
        self,
        *,
        subscription: str | None = None,
        state: str | None = None,
        run_id: str | None = None,
        before: int | None = None,
        limit: int = 100,
    ) -> DeliveryList:
        """Deliveries, newest first (``state``: pending, delivered or dead)."""
        return await self._send(_SubCalls.deliveries(subscription, state, run_id, before, limit))

    async def get_delivery(self, delivery_id: int) -> DeliveryDetail:
        """A delivery and every attempt of it."""
        return await self._send(_Call("GET", f"/deliveries/{int(delivery_id)}", DeliveryDetail))

    async def redeliver(self, delivery_id: int) -> Redelivered:
        """Queue a dead-lettered delivery again (operators)."""
        return await self._send(
            _Call("POST", f"/deliveries/{int(delivery_id)}/redeliver", Redelivered)
        )

    async def redeliver_dead(self, subscription: str) -> Redelivered:
        """Queue every dead-lettered delivery of a subscription again (operators)."""
        return await self._send(
            _Call("POST", f"/subscriptions/{_seg(subscription)}/redeliver", Redelivered)
        )

    async def wait(
        self, run_id: str, *, timeout: float | None = None, poll: float = 1.0
    ) -> RunDetail:
        """Poll until the run has ended; ``TimeoutError`` after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            run = await self.get_run(run_id)
            if run.state.terminal:
                return run
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"run {run_id} still {run.state} after {timeout}s")
            await asyncio.sleep(poll)

    # -- users and API tokens (admins; a user may list and revoke their own tokens) --

    async def list_users(self) -> list[UserPublic]:
        """Every user (admins only)."""
        return await self._send(_AccountCalls.list_users())

    async def create_user(
        self,
        username: str,
        role: str,
        *,
        password: str | None = None,
        slack_user_id: str | None = None,
    ) -> UserPublic:
        """Create a user (``role``: admin, operator or viewer); without a password
        the user can only use API tokens or Slack."""
        return await self._send(_AccountCalls.create_user(username, role, password, slack_user_id))

    async def get_user(self, user_id: int) -> UserPublic:
        """One user by id."""
        return await self._send(_AccountCalls.get_user(user_id))

    async def update_user(
        self,
        user_id: int,
        *,
        password: str | None = UNSET,
        role: str | None = UNSET,
        disabled: bool | None = UNSET,
        slack_user_id: str | None = UNSET,
    ) -> UserPublic:
        """Change only the fields given; a new password logs the user out everywhere
        (access tokens issued before it stop working; API tokens stay valid)."""
        changes = _changes(
            password=password, role=role, disabled=disabled, slack_user_id=slack_user_id
        )
        return await self._send(_AccountCalls.update_user(user_id, changes))

    async def delete_user(self, user_id: int) -> None:
        """Delete a user and revoke their API tokens."""
        await self._send(_AccountCalls.delete_user(user_id))

    async def create_token(
        self, name: str, *, user_id: int | None = None, expires_in_days: int | None = None
    ) -> ApiTokenCreated:
        """A new API token (admins); ``.token`` is shown only in this answer."""
        return await self._send(_AccountCalls.create_token(name, user_id, expires_in_days))

    async def list_tokens(self, *, user_id: int | None = None) -> list[ApiTokenPublic]:
        """API tokens: every one for admins, your own otherwise."""
        return await self._send(_AccountCalls.list_tokens(user_id))

    async def get_token(self, token_id: str) -> ApiTokenPublic:
        """One API token's record (never the token itself)."""
        return await self._send(_AccountCalls.get_token(token_id))

    async def revoke_token(self, token_id: str) -> ApiTokenPublic:
        """Revoke an API token (its owner or an admin)."""
        return await self._send(_AccountCalls.revoke_token(token_id))

    async def follow_logs(
        self, run_id: str, *, step: str | None = None, after: int = 0, reconnect: bool = True
    ) -> AsyncIterator[LogLinePublic]:
        """Yield log lines as they are written until the run is over (resumes a
        dropped connection with ``Last-Event-ID``)."""
        last, failures = after, 0
        path = f"/runs/{_seg(run_id)}/logs/stream"
        stream_timeout = httpx.Timeout(self._timeout, read=STREAM_READ_TIMEOUT)
        while True:
            try:
                async with self._http.stream(
                    "GET",
                    path,
                    params=_q(step=step, after=after) or None,
                    headers=self._auth(_stream_headers(last)),
                    timeout=stream_timeout,
                ) as resp:
                    if resp.is_error:
                        await resp.aread()
                        raise _error_of(resp)
                    parser = _SseParser()
                    async for raw in resp.aiter_lines():
                        ev = parser.feed(raw)
                        if ev is None:
                            continue
                        if ev.event == "end":
                            return
                        if ev.data:
                            line = LogLinePublic.model_validate_json("\n".join(ev.data))
                            last, failures = line.id, 0
                            yield line
            except httpx.TransportError as exc:
                if not reconnect or failures >= MAX_STREAM_RECONNECTS:
                    raise _transport_error(exc) from None
            else:
                if not reconnect or failures >= MAX_STREAM_RECONNECTS:
                    raise ApiError(0, "connection_error", "the log stream ended early")
            failures += 1
            await asyncio.sleep(min(0.25 * 2**failures, 5.0))

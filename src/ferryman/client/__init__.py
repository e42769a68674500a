"""Python client for the ferryman REST API, using the API's own models.

>>> from ferryman.client import Client
>>> with Client("http://127.0.0.1:8787") as fm:  # doctest: +SKIP
...     fm.login("alice", "secret-password")
...     run = fm.create_run("default", "etl", {"day": "2024-05-01"}, idempotency_key="etl-0501")
...     for line in fm.follow_logs(run.id):
...         print(line.node, line.line)
...     print(fm.wait(run.id).state)

``Client`` is synchronous, ``AsyncClient`` has the same methods as coroutines
(``iter_runs`` and ``follow_logs`` are then async generators). ``token`` is
either a JWT from ``login`` (``POST /token``) or a long-lived API token
(``fm_…``).

Every failure is raised as ``ApiError(status, code, message, details)``: the
API's error body for HTTP errors, ``status`` 0 when the server could not be
reached or did not answer in time.

Importing this package is light: httpx, pydantic and ferryman's wire models
and domain, never the server, the database layer or the services (a unit test
and an import-linter contract hold that).

Modules: ``sync`` (``Client``), ``aio`` (``AsyncClient``), ``sync_admin`` and
``aio_admin`` (their administration methods), ``calls`` and ``admin_calls``
(the request of every operation, shared by both), ``sse`` (following a log
stream), ``errors`` (``ApiError``), ``base`` (address and token).
"""

from __future__ import annotations

from ferryman.api.accounts import (
    ApiTokenCreate,
    ApiTokenCreated,
    ApiTokenPublic,
    UserCreate,
    UserPublic,
    UserUpdate,
)
from ferryman.api.schemas import (
    CompatRunCreated,
    EventList,
    EventPublic,
    LogLinePublic,
    LogList,
    NodePublic,
    PipelineDetail,
    PipelineList,
    PipelinePublic,
    PipelineRegistered,
    RunCounts,
    RunCreate,
    RunCreated,
    RunDetail,
    RunList,
    RunOutputs,
    RunPublic,
    StepPublic,
    TriggerFiringPublic,
    TriggerPublic,
    VersionList,
    VersionPublic,
)
from ferryman.api.subscription_schemas import (
    AttemptPublic,
    DeliveryDetail,
    DeliveryList,
    DeliveryPublic,
    Redelivered,
    SubscriptionCreated,
    SubscriptionList,
    SubscriptionPublic,
    TestResult,
)
from ferryman.client.admin_calls import UNSET
from ferryman.client.aio import AsyncClient
from ferryman.client.errors import ApiError
from ferryman.client.sse import MAX_STREAM_RECONNECTS, STREAM_READ_TIMEOUT
from ferryman.client.sync import Client
from ferryman.domain.accounts import Role, RoleName
from ferryman.domain.spec import PipelineSpec
from ferryman.domain.states import NodeState, RunState

__all__ = [
    "MAX_STREAM_RECONNECTS",
    "STREAM_READ_TIMEOUT",
    "UNSET",
    "ApiError",
    "ApiTokenCreate",
    "ApiTokenCreated",
    "ApiTokenPublic",
    "AsyncClient",
    "AttemptPublic",
    "Client",
    "CompatRunCreated",
    "DeliveryDetail",
    "DeliveryList",
    "DeliveryPublic",
    "EventList",
    "EventPublic",
    "LogLinePublic",
    "LogList",
    "NodePublic",
    "NodeState",
    "PipelineDetail",
    "PipelineList",
    "PipelinePublic",
    "PipelineRegistered",
    "PipelineSpec",
    "Redelivered",
    "Role",
    "RoleName",
    "RunCounts",
    "RunCreate",
    "RunCreated",
    "RunDetail",
    "RunList",
    "RunOutputs",
    "RunPublic",
    "RunState",
    "StepPublic",
    "SubscriptionCreated",
    "SubscriptionList",
    "SubscriptionPublic",
    "TestResult",
    "TriggerFiringPublic",
    "TriggerPublic",
    "UserCreate",
    "UserPublic",
    "UserUpdate",
    "VersionList",
    "VersionPublic",
]

"""What a plugin is: ``AsyncPlugin`` (create → get → status → delete) or
``SyncPlugin`` (one ``do``), the ``Phase`` of a remote resource, the
``TaskContext`` a call gets, and the two kinds of remote error.

Errors a plugin raises tell ferryman what to do:

- ``SystemFailure`` (network, 5xx, timeouts, 429): retried with backoff, counted
  against ``max_system_failures`` (reset by any success); it never uses one of
  the step's own retries. ``retry_after`` (seconds) is honoured.
- ``UserFailure``: the step's attempt fails with the remote's message.

Any other exception is a bug of the plugin: the attempt fails with its text.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


class SystemFailure(Exception):
    """The remote side or the way to it failed; trying again may help."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UserFailure(Exception):
    """The remote side refused the task: the step fails with this message."""


class PhaseState(enum.StrEnum):
    """Where a remote resource is."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    #: Failed in a way another attempt may fix: the attempt fails and the
    #: step's own retries (with a new idempotency key) decide what follows.
    RETRYABLE_FAILURE = "retryable_failure"


@dataclass(frozen=True)
class Phase:
    """A resource's phase, its message and (when it succeeded) its outputs."""

    state: PhaseState
    message: str = ""
    outputs: Any = None

    @property
    def terminal(self) -> bool:
        return self.state not in (PhaseState.QUEUED, PhaseState.RUNNING)

    @classmethod
    def queued(cls, message: str = "") -> Phase:
        return cls(PhaseState.QUEUED, message)

    @classmethod
    def running(cls, message: str = "") -> Phase:
        return cls(PhaseState.RUNNING, message)

    @classmethod
    def succeeded(cls, outputs: Any = None, message: str = "") -> Phase:
        return cls(PhaseState.SUCCEEDED, message, outputs)

    @classmethod
    def failed(cls, message: str) -> Phase:
        return cls(PhaseState.FAILED, message)

    @classmethod
    def retryable(cls, message: str) -> Phase:
        return cls(PhaseState.RETRYABLE_FAILURE, message)


class TaskConfig(BaseModel):
    """Base of a plugin's task configuration (a step's ``config``)."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class TaskContext:
    """One attempt of one task step, as a plugin sees it.

    ``config`` is the step's ``config``, templates rendered, validated by the
    plugin's ``config_model``. ``idempotency_key`` is the same for every call
    of ``create`` for this attempt, in any worker: send it to the remote so
    that a create repeated after a crash finds the first one's resource.
    ``secrets`` holds only the secrets the step declared.
    """

    run_id: str
    step: str
    attempt: int
    namespace: str
    pipeline: str
    task_type: str
    idempotency_key: str
    config: Any
    secrets: dict[str, str] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PluginHost:
    """What ferryman gives a plugin when it makes one: the destination policy
    every outbound request must pass (``ferryman.http``; ``None``: the
    development policy, which refuses only cloud metadata services)."""

    http_policy: Any = None


class Plugin(ABC):
    """What every plugin declares. Subclass ``AsyncPlugin`` or ``SyncPlugin``.

    Made once per worker, on first use, with a ``PluginHost``."""

    def __init__(self, host: PluginHost | None = None) -> None:
        self.host = host or PluginHost()

    #: The plugin's id: unique among the installed plugins.
    id: ClassVar[str]
    #: The task types it handles.
    task_types: ClassVar[frozenset[str]]
    #: The task types it is the default plugin for (at most one per type).
    default_for: ClassVar[frozenset[str]] = frozenset()
    #: The model a step's ``config`` is validated against (defaults allowed).
    config_model: ClassVar[type[TaskConfig]] = TaskConfig
    #: One-line description, shown by ``ferryman plugins ls``.
    description: ClassVar[str] = ""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the plugin holds (clients); called once, at the end."""


class AsyncPlugin(Plugin):
    """A plugin for long tasks: create a remote resource, follow it, delete it."""

    @abstractmethod
    async def create(self, ctx: TaskContext) -> tuple[Any, Any | None]:
        """Create the remote resource; return ``(resource_meta, resource or None)``.

        ``resource_meta`` must be JSON-serialisable: it is stored durably and
        is all a worker that adopts the step has to find the resource again.
        Called at least once per attempt, always with ``ctx.idempotency_key``.
        """

    @abstractmethod
    async def get(self, meta: Any, ctx: TaskContext) -> Any:
        """Fetch the resource ``meta`` names (read-limited). ``ctx`` carries the
        step's secrets, so credentials never need to be in the stored meta."""

    @abstractmethod
    def status(self, ctx: TaskContext, resource: Any) -> Phase:
        """The phase of ``resource``: pure, no network."""

    @abstractmethod
    async def delete(self, meta: Any, reason: str, ctx: TaskContext) -> None:
        """Delete (cancel) the resource; deleting a deleted or unknown one is fine.

        May be called by a worker that adopted the step (``ctx`` then has no
        inputs or params, only the stored context and the secrets)."""


class SyncPlugin(Plugin):
    """A plugin for short tasks: one call whose answer is the step's output."""

    @abstractmethod
    async def do(self, ctx: TaskContext) -> Any:
        """Do the task; return its output (JSON-serialisable)."""

"""What the plugins keep outside the worker process (``TaskState``).

Resource meta, pending deletes, rate-limiter buckets and quota holders must
outlive a worker and be shared by all the workers of a deployment, so they
live in the database: ``ferryman.services.task_state.DbTaskState`` is the
implementation a worker binds to the ``task`` infrastructure. ``MemoryTaskState``
is the in-process twin (tests, an infrastructure used without a store): the
same rules, for one process.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class StoredResource:
    """What is known durably of one attempt's remote resource."""

    key: str
    plugin: str
    meta: Any  # None until ``create`` returned
    delete_reason: str | None  # set once a delete was asked for
    done: bool  # the resource ended (or was deleted): nothing left to do
    #: What a worker that adopts the attempt needs to go on (no secret values).
    context: dict[str, Any] | None = None


class TaskState(Protocol):
    """The durable, shared state of the plugins (see the module docstring)."""

    def take_token(self, bucket: str, qps: float, burst: float) -> float:
        """Take one token of ``bucket`` (refilled at ``qps`` up to ``burst``):
        0 when taken, else the seconds until one will be there."""

    def quota_acquire(self, key: str, limit: int, holder: str) -> tuple[bool, int]:
        """Hold one of ``limit`` places of quota ``key`` for ``holder`` (again
        true when it holds one already); ``(held, in use)``."""

    def quota_release(self, holder: str) -> None:
        """Give back the place ``holder`` holds, if any."""

    def resource(self, key: str) -> StoredResource | None:
        """The stored resource of an attempt (its idempotency key)."""

    def begin_resource(
        self, key: str, plugin: str, run_id: str, node: str, attempt: int, context: dict[str, Any]
    ) -> None:
        """Record that ``create`` is about to be called for ``key`` (kept if there)."""

    def save_meta(self, key: str, meta: Any) -> None:
        """Store the resource meta ``create`` returned."""

    def request_delete(self, key: str, reason: str) -> None:
        """Record that the resource must be deleted (done even after a restart)."""

    def finish(self, key: str) -> None:
        """The resource needs nothing more (ended or deleted); its quota place is freed."""

    def pending_deletes(self, limit: int) -> list[StoredResource]:
        """Resources whose delete was asked for and not done yet."""

    def note(self, key: str, message: str) -> None:
        """The attempt's state message (``waiting for quota ...``); empty clears it."""

    def waiting(
        self, key: str, run_id: str, node: str, attempt: int, message: str, data: dict[str, Any]
    ) -> None:
        """The attempt starts waiting (for quota): its state message becomes
        ``message`` and a ``NodeWaiting`` event with ``data`` is recorded."""

    def count(self, plugin: str, counter: str, n: int = 1) -> None:
        """Add ``n`` to one of the plugin's counters (creates, gets, ...)."""


class MemoryTaskState:
    """``TaskState`` for one process (dicts behind a lock)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}
        self._holders: dict[str, str] = {}  # holder -> quota key
        self._resources: dict[str, StoredResource] = {}
        self.messages: dict[str, str] = {}
        #: The waits recorded (no event log in memory): (run, node, attempt, message, data).
        self.waits: list[tuple[str, str, int, str, dict[str, Any]]] = []
        self.counters: dict[tuple[str, str], int] = {}

    def take_token(self, bucket: str, qps: float, burst: float) -> float:
        now = time.monotonic()
        with self._lock:
            tokens, at = self._buckets.get(bucket, (burst, now))
            tokens = min(burst, tokens + (now - at) * qps)
            if tokens >= 1:
                self._buckets[bucket] = (tokens - 1, now)
                return 0.0
            self._buckets[bucket] = (tokens, now)
            return (1 - tokens) / qps

    def quota_acquire(self, key: str, limit: int, holder: str) -> tuple[bool, int]:
        with self._lock:
            in_use = sum(1 for k in self._holders.values() if k == key)
            if holder in self._holders:
                return True, in_use
            if in_use >= limit:
                return False, in_use
            self._holders[holder] = key
            return True, in_use + 1

    def quota_release(self, holder: str) -> None:
        with self._lock:
            self._holders.pop(holder, None)

    def resource(self, key: str) -> StoredResource | None:
        with self._lock:
            return self._resources.get(key)

    def begin_resource(
        self, key: str, plugin: str, run_id: str, node: str, attempt: int, context: dict[str, Any]
    ) -> None:
        with self._lock:
            self._resources.setdefault(key, StoredResource(key, plugin, None, None, False, context))

    def _update(self, key: str, **changes: Any) -> None:
        r = self._resources.get(key)
        if r is not None:
            self._resources[key] = StoredResource(**{**r.__dict__, **changes})

    def save_meta(self, key: str, meta: Any) -> None:
        with self._lock:
            self._update(key, meta=meta)

    def request_delete(self, key: str, reason: str) -> None:
        with self._lock:
            self._update(key, delete_reason=reason)

    def finish(self, key: str) -> None:
        with self._lock:
            self._update(key, done=True)
            self._holders.pop(key, None)

    def pending_deletes(self, limit: int) -> list[StoredResource]:
        with self._lock:
            found = [r for r in self._resources.values() if r.delete_reason and not r.done]
        return found[:limit]

    def note(self, key: str, message: str) -> None:
        with self._lock:
            self.messages[key] = message

    def waiting(
        self, key: str, run_id: str, node: str, attempt: int, message: str, data: dict[str, Any]
    ) -> None:
        with self._lock:
            self.messages[key] = message
            self.waits.append((run_id, node, attempt, message, data))

    def count(self, plugin: str, counter: str, n: int = 1) -> None:
        with self._lock:
            self.counters[(plugin, counter)] = self.counters.get((plugin, counter), 0) + n

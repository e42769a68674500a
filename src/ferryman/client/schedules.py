"""The schedule methods of ``Client`` (``SyncSchedules``) and
``AsyncClient`` (``AsyncSchedules``); docs/schedules.md."""

from __future__ import annotations

import datetime as dt
from typing import Any, TypeVar

from ferryman.api.schedule_schemas import (
    NextFires,
    ScheduleList,
    SchedulePublic,
    TickList,
    TickOutcome,
)
from ferryman.client.calls import Call
from ferryman.client.schedule_calls import ScheduleCalls as C

T = TypeVar("T")


class SyncSchedules:
    """Schedules (mixed into ``Client``, which sends the requests)."""

    def send(self, call: Call[T]) -> T:
        """Send one request (``Client.send``)."""
        raise NotImplementedError

    def create_schedule(self, spec: dict[str, Any], namespace: str = "default") -> SchedulePublic:
        """Create a schedule (operators): ``{"name", "pipeline", "cron" or
        "interval", "timezone", "params", ...}`` as in docs/schedules.md."""
        return self.send(C.create(namespace, spec))

    def list_schedules(
        self, namespace: str | None = None, pipeline: str | None = None
    ) -> ScheduleList:
        """Schedules (of one namespace or pipeline if given)."""
        return self.send(C.list_all(namespace, pipeline))

    def get_schedule(self, name: str, namespace: str = "default") -> SchedulePublic:
        """One schedule."""
        return self.send(C.get(namespace, name))

    def update_schedule(
        self, name: str, changes: dict[str, Any], namespace: str = "default"
    ) -> SchedulePublic:
        """Change fields of a schedule (operators); past ticks are never fired."""
        return self.send(C.update(namespace, name, changes))

    def pause_schedule(self, name: str, namespace: str = "default") -> SchedulePublic:
        """Pause a schedule (operators)."""
        return self.send(C.pause(namespace, name, True))

    def resume_schedule(self, name: str, namespace: str = "default") -> SchedulePublic:
        """Resume a schedule (operators); the ticks of the pause are not fired."""
        return self.send(C.pause(namespace, name, False))

    def delete_schedule(self, name: str, namespace: str = "default") -> None:
        """Delete a schedule (operators); its runs stay."""
        self.send(C.delete(namespace, name))

    def next_fire_times(self, name: str, n: int = 10, namespace: str = "default") -> NextFires:
        """The next ``n`` fire times, in the schedule's zone and in UTC."""
        return self.send(C.upcoming(namespace, name, n))

    def schedule_ticks(self, name: str, limit: int = 50, namespace: str = "default") -> TickList:
        """The schedule's newest ticks and their runs."""
        return self.send(C.ticks(namespace, name, limit))

    def run_schedule_now(self, name: str, namespace: str = "default") -> TickOutcome:
        """One run of the schedule now, with its parameters (operators)."""
        return self.send(C.run_now(namespace, name))

    def backfill_schedule(
        self,
        name: str,
        start: dt.datetime,
        end: dt.datetime,
        *,
        overlap: str = "allow",
        namespace: str = "default",
    ) -> TickOutcome:
        """Fire the never-decided ticks in ``(start, end]`` (operators)."""
        return self.send(C.backfill(namespace, name, start, end, overlap))


class AsyncSchedules:
    """Schedules (mixed into ``AsyncClient``), as coroutines."""

    async def send(self, call: Call[T]) -> T:
        """Send one request (``AsyncClient.send``)."""
        raise NotImplementedError

    async def create_schedule(
        self, spec: dict[str, Any], namespace: str = "default"
    ) -> SchedulePublic:
        """See ``Client.create_schedule``."""
        return await self.send(C.create(namespace, spec))

    async def list_schedules(
        self, namespace: str | None = None, pipeline: str | None = None
    ) -> ScheduleList:
        """See ``Client.list_schedules``."""
        return await self.send(C.list_all(namespace, pipeline))

    async def get_schedule(self, name: str, namespace: str = "default") -> SchedulePublic:
        """See ``Client.get_schedule``."""
        return await self.send(C.get(namespace, name))

    async def update_schedule(
        self, name: str, changes: dict[str, Any], namespace: str = "default"
    ) -> SchedulePublic:
        """See ``Client.update_schedule``."""
        return await self.send(C.update(namespace, name, changes))

    async def pause_schedule(self, name: str, namespace: str = "default") -> SchedulePublic:
        """See ``Client.pause_schedule``."""
        return await self.send(C.pause(namespace, name, True))

    async def resume_schedule(self, name: str, namespace: str = "default") -> SchedulePublic:
        """See ``Client.resume_schedule``."""
        return await self.send(C.pause(namespace, name, False))

    async def delete_schedule(self, name: str, namespace: str = "default") -> None:
        """See ``Client.delete_schedule``."""
        await self.send(C.delete(namespace, name))

    async def next_fire_times(
        self, name: str, n: int = 10, namespace: str = "default"
    ) -> NextFires:
        """See ``Client.next_fire_times``."""
        return await self.send(C.upcoming(namespace, name, n))

    async def schedule_ticks(
        self, name: str, limit: int = 50, namespace: str = "default"
    ) -> TickList:
        """See ``Client.schedule_ticks``."""
        return await self.send(C.ticks(namespace, name, limit))

    async def run_schedule_now(self, name: str, namespace: str = "default") -> TickOutcome:
        """See ``Client.run_schedule_now``."""
        return await self.send(C.run_now(namespace, name))

    async def backfill_schedule(
        self,
        name: str,
        start: dt.datetime,
        end: dt.datetime,
        *,
        overlap: str = "allow",
        namespace: str = "default",
    ) -> TickOutcome:
        """See ``Client.backfill_schedule``."""
        return await self.send(C.backfill(namespace, name, start, end, overlap))

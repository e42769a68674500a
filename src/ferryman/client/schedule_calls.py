"""The requests of the schedule operations, built once for both clients."""

from __future__ import annotations

import datetime as dt
from typing import Any

from ferryman.api.schedule_schemas import (
    NextFires,
    ScheduleList,
    SchedulePublic,
    TickList,
    TickOutcome,
)
from ferryman.client.calls import Call, query, segment


def _path(namespace: str, name: str | None = None) -> str:
    base = f"/namespaces/{segment(namespace)}/schedules"
    return base if name is None else f"{base}/{segment(name)}"


class ScheduleCalls:
    """One static method per schedule operation."""

    @staticmethod
    def create(namespace: str, body: dict[str, Any]) -> Call[SchedulePublic]:
        return Call("POST", _path(namespace), SchedulePublic, json=body)

    @staticmethod
    def list_all(namespace: str | None, pipeline: str | None) -> Call[ScheduleList]:
        params = query(namespace=namespace, pipeline=pipeline)
        return Call("GET", "/schedules", ScheduleList, params=params)

    @staticmethod
    def get(namespace: str, name: str) -> Call[SchedulePublic]:
        return Call("GET", _path(namespace, name), SchedulePublic)

    @staticmethod
    def update(namespace: str, name: str, changes: dict[str, Any]) -> Call[SchedulePublic]:
        return Call("PATCH", _path(namespace, name), SchedulePublic, json=changes)

    @staticmethod
    def pause(namespace: str, name: str, paused: bool) -> Call[SchedulePublic]:
        verb = "pause" if paused else "resume"
        return Call("POST", f"{_path(namespace, name)}/{verb}", SchedulePublic)

    @staticmethod
    def delete(namespace: str, name: str) -> Call[None]:
        return Call("DELETE", _path(namespace, name), None)

    @staticmethod
    def upcoming(namespace: str, name: str, n: int) -> Call[NextFires]:
        return Call("GET", f"{_path(namespace, name)}/next", NextFires, params=query(n=n))

    @staticmethod
    def ticks(namespace: str, name: str, limit: int) -> Call[TickList]:
        return Call("GET", f"{_path(namespace, name)}/ticks", TickList, params=query(limit=limit))

    @staticmethod
    def run_now(namespace: str, name: str) -> Call[TickOutcome]:
        return Call("POST", f"{_path(namespace, name)}/run", TickOutcome)

    @staticmethod
    def backfill(
        namespace: str, name: str, start: dt.datetime, end: dt.datetime, overlap: str
    ) -> Call[TickOutcome]:
        body = {"start": start.isoformat(), "end": end.isoformat(), "overlap": overlap}
        return Call("POST", f"{_path(namespace, name)}/backfill", TickOutcome, json=body)

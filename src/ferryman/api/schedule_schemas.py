"""The wire models of schedules, shared by the REST API and the Python client
(pydantic and the domain only)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ferryman.domain.schedules import CatchUp, Overlap, ScheduleSpec


class ScheduleCreate(ScheduleSpec):
    """A new schedule: the fields of ``ScheduleSpec`` (docs/schedules.md)."""


class ScheduleUpdate(BaseModel):
    """The fields to change; the others stay. Changing the timing (cron,
    interval, time zone, start/end, daylight-saving policy) or resuming never
    fires past ticks."""

    model_config = ConfigDict(extra="forbid")

    pipeline: str | None = None
    cron: str | None = None
    interval: float | None = None
    timezone: str | None = None
    params: dict[str, Any] | None = None
    labels: dict[str, str] | None = None
    start_at: dt.datetime | None = None
    end_at: dt.datetime | None = None
    jitter: float | None = None
    on_missing_time: Literal["shift", "skip"] | None = None
    on_repeated_time: Literal["once", "twice"] | None = None
    catchup: CatchUp | None = None
    max_catchup: int | None = None
    catchup_window: float | None = None
    overlap: Overlap | None = None
    paused: bool | None = None

    def changes(self) -> dict[str, Any]:
        """The fields given (``null`` clears ``cron``/``interval``/dates)."""
        return self.model_dump(mode="json", exclude_unset=True)


class SchedulePublic(ScheduleSpec):
    """A stored schedule."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str
    namespace: str
    source: str = Field(
        description="'api', 'slack' (the bot's `schedule`) or 'pipeline' (declared by the pipeline)"
    )
    next_fire_at: dt.datetime | None = Field(
        default=None, description="When the next tick is due (UTC; null: paused or ended)"
    )
    buffered: int = 0
    created_by: str | None = None
    created_at: dt.datetime
    updated_at: dt.datetime


class ScheduleList(BaseModel):
    """Schedules, by namespace and name."""

    items: list[SchedulePublic]


class FireTime(BaseModel):
    """One coming tick, in the schedule's time zone and in UTC."""

    local: dt.datetime
    utc: dt.datetime


class NextFires(BaseModel):
    """The coming ticks of a schedule."""

    timezone: str
    items: list[FireTime]


class TickPublic(BaseModel):
    """One decided tick and its run."""

    fire_time: dt.datetime
    state: str = Field(description="fired, missed, skipped, buffered or failed")
    kind: str = Field(description="schedule, backfill or manual")
    reason: str | None = None
    run_id: str | None = None
    run_name: str | None = None
    run_state: str | None = None


class TickList(BaseModel):
    """A schedule's newest ticks, newest first."""

    items: list[TickPublic]


class Backfill(BaseModel):
    """Fire the ticks in ``(start, end]`` that were never decided."""

    model_config = ConfigDict(extra="forbid")

    start: dt.datetime
    end: dt.datetime
    overlap: Overlap = Overlap.ALLOW


class TickOutcome(BaseModel):
    """What a backfill or a run-now did."""

    fired: int = 0
    skipped: int = 0
    buffered: int = 0
    failed: int = 0
    run_ids: list[str] = Field(default_factory=list)

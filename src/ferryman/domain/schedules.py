"""Schedules: what a schedule is (``ScheduleSpec``) and when it fires.

Pure: no database, no clock. The scheduler (``services/schedules.py``) asks
``ticks_between`` for the ticks due since its cursor and decides, with
``plan_ticks``, which of them fire, which were missed and which wait for a
running run (the overlap policy).

**Cron in a time zone.** Cron text is matched against the *wall-clock* time
of the schedule's zone (``cronsim`` on naive local times, see ADR 0012), and
each match is then placed on the UTC time line by the daylight-saving policy:

- a wall time that does not exist (the clock jumps forward over it):
  ``on_missing_time="shift"`` (default) runs it shifted forward by the jump
  (02:30 on a 1-hour spring-forward day runs at 03:30 new time), ``"skip"``
  does not run it that day;
- a wall time that happens twice (the clock goes back over it):
  ``on_repeated_time="once"`` (default) runs it the first time only,
  ``"twice"`` runs it both times.

Two matches that land on one UTC instant (a shifted 02:30 and a real 03:30)
are one tick. Interval schedules tick at ``anchor + k * interval`` (the
anchor is ``start_at``, else the Unix epoch) and ignore time zones.

**Jitter** delays a tick's run by a deterministic amount (a hash of the
schedule's name and the tick), so every scheduler agrees on it; the tick
itself (its identity, ``fire_time``) does not move.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ferryman.domain.names import check_name

UTC = dt.UTC
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
_DAY = dt.timedelta(hours=26)  # a day, and then some: how far offsets are looked for


class CatchUp(StrEnum):
    """What a schedule does with ticks missed while no scheduler ran."""

    NONE = "none"  # nothing: every missed tick is recorded as missed
    LATEST = "latest"  # one run, for the newest missed tick (in the window)
    ALL = "all"  # up to ``max_catchup`` runs, the newest missed ticks (in the window)


class Overlap(StrEnum):
    """What a tick does while a run of its schedule is still active."""

    ALLOW = "allow"  # start anyway
    SKIP = "skip"  # record the tick as skipped
    BUFFER_ONE = "buffer_one"  # start it when the active run ends; later ones skipped
    BUFFER_ALL = "buffer_all"  # start each in turn, one at a time
    CANCEL_OTHER = "cancel_other"  # cancel the active run(s), start this one


class TickState(StrEnum):
    """What became of one tick (``schedule_ticks.state``)."""

    FIRED = "fired"  # its run was created
    MISSED = "missed"  # late, outside the catch-up policy
    SKIPPED = "skipped"  # the overlap policy said no
    BUFFERED = "buffered"  # waits for the active run to end
    FAILED = "failed"  # no run could be created (see the reason)


def _check_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {value!r} (use an IANA name such as 'Europe/London')"
        ) from None
    return value


def check_cron(text: str) -> str:
    """``text`` if it is valid cron (5 fields, or 6 with seconds first); else ``ValueError``."""
    fields = text.split()
    if len(fields) not in (5, 6):
        raise ValueError(
            f"cron {text!r} has {len(fields)} fields: use 5 (minute hour day month weekday) "
            "or 6 (seconds first)"
        )
    try:
        CronSim(text, dt.datetime(2000, 1, 1))
    except CronSimError as exc:
        raise ValueError(f"invalid cron {text!r}: {exc}") from None
    return " ".join(fields)


class ScheduleSpec(BaseModel):
    """A schedule: which pipeline, when, with which parameters and policies.

    Exactly one of ``cron`` and ``interval`` (seconds, at least 1). Times in
    ``start_at``/``end_at`` are aware (naive ones are taken as UTC).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    pipeline: str
    cron: str | None = None
    interval: float | None = Field(default=None, ge=1, le=366 * 86400)
    timezone: str = "UTC"
    params: dict[str, Any] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    start_at: dt.datetime | None = None
    end_at: dt.datetime | None = None
    jitter: float = Field(default=0.0, ge=0, le=3600, description="Max seconds a run is delayed")
    on_missing_time: Literal["shift", "skip"] = "shift"
    on_repeated_time: Literal["once", "twice"] = "once"
    catchup: CatchUp = CatchUp.LATEST
    max_catchup: int = Field(default=10, ge=1, le=1000)
    catchup_window: float = Field(default=3600.0, ge=0, le=366 * 86400, description="Seconds")
    overlap: Overlap = Overlap.SKIP
    paused: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name("schedule", v)

    @field_validator("pipeline")
    @classmethod
    def _pipeline(cls, v: str) -> str:
        return check_name("pipeline", v)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        return _check_zone(v)

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        return None if v is None else check_cron(v)

    @field_validator("start_at", "end_at")
    @classmethod
    def _aware(cls, v: dt.datetime | None) -> dt.datetime | None:
        if v is None:
            return None
        return (v if v.tzinfo else v.replace(tzinfo=UTC)).astimezone(UTC)

    @model_validator(mode="after")
    def _one_kind(self) -> ScheduleSpec:
        if (self.cron is None) == (self.interval is None):
            raise ValueError("give exactly one of 'cron' and 'interval'")
        if self.start_at and self.end_at and self.end_at <= self.start_at:
            raise ValueError("'end_at' must be after 'start_at'")
        return self

    @property
    def zone(self) -> ZoneInfo:
        """The schedule's time zone."""
        return ZoneInfo(self.timezone)

    def describe(self) -> str:
        """``cron '0 3 * * 1-5' in Asia/Kolkata`` or ``every 30s``."""
        if self.cron is not None:
            return f"cron {self.cron!r} in {self.timezone}"
        return f"every {self.interval:g}s"


# -- due times --------------------------------------------------------------------


def _cron_instants(spec: ScheduleSpec, wall: dt.datetime) -> list[dt.datetime]:
    """The UTC instants of one wall-time match, by the daylight-saving policy."""
    zone = spec.zone
    first = wall.replace(tzinfo=zone, fold=0)
    second = wall.replace(tzinfo=zone, fold=1)
    back = first.astimezone(UTC).astimezone(zone).replace(tzinfo=None)
    if back != wall:  # in the gap of a forward jump: the time does not exist
        return [] if spec.on_missing_time == "skip" else [first.astimezone(UTC)]
    if first.utcoffset() != second.utcoffset():  # happens twice
        if spec.on_repeated_time == "twice":
            return [first.astimezone(UTC), second.astimezone(UTC)]
        return [first.astimezone(UTC)]
    return [first.astimezone(UTC)]


def next_tick(spec: ScheduleSpec, after: dt.datetime) -> dt.datetime | None:
    """The first tick strictly after ``after`` (UTC), or None (past ``end_at``)."""
    after = after.astimezone(UTC)
    if spec.start_at is not None and after < spec.start_at:
        after = spec.start_at - dt.timedelta(microseconds=1)
    tick = _interval_next(spec, after) if spec.interval is not None else _cron_next(spec, after)
    if tick is None or (spec.end_at is not None and tick > spec.end_at):
        return None
    return tick


def _interval_next(spec: ScheduleSpec, after: dt.datetime) -> dt.datetime:
    assert spec.interval is not None
    anchor = spec.start_at or EPOCH
    step = dt.timedelta(seconds=spec.interval)
    if after < anchor:
        return anchor
    k = (after - anchor) // step + 1
    return anchor + k * step


def _offset_range(zone: ZoneInfo, at: dt.datetime) -> tuple[dt.timedelta, dt.timedelta]:
    """The smallest and largest UTC offset of ``zone`` within a day of ``at``."""
    offsets = [(at + k * _DAY).astimezone(zone).utcoffset() or dt.timedelta(0) for k in (-1, 0, 1)]
    return min(offsets), max(offsets)


def _cron_next(spec: ScheduleSpec, after: dt.datetime) -> dt.datetime | None:
    assert spec.cron is not None
    zone = spec.zone
    # A wall time w is the instant w - offset(w): one after ``after`` has
    # w > after + offset(w) >= after + (the smallest offset nearby).
    low, _ = _offset_range(zone, after)
    start = after.replace(tzinfo=None) + low
    best: dt.datetime | None = None
    horizon: dt.datetime | None = None
    for wall in CronSim(spec.cron, start):
        if horizon is not None and wall > horizon:
            break  # every later wall time lands after ``best``
        for instant in _cron_instants(spec, wall):
            if instant > after and (best is None or instant < best):
                best = instant
                _, high = _offset_range(zone, best)
                horizon = best.replace(tzinfo=None) + high
        if wall.year > after.year + 30:  # a cron that (almost) never matches
            break
    return best


def ticks_between(
    spec: ScheduleSpec, after: dt.datetime, until: dt.datetime, limit: int = 10_000
) -> tuple[list[dt.datetime], bool]:
    """The ticks in ``(after, until]``, oldest first, at most ``limit`` (the
    *newest* ones); the flag says whether older ones were left out."""
    found: list[dt.datetime] = []
    more = False
    # Interval schedules jump straight to the window's end when it is long.
    if spec.interval is not None:
        step = dt.timedelta(seconds=spec.interval)
        if until - after > step * (limit + 1):
            more = True
            after = max(after, until - step * (limit + 1))
    cursor = after
    while True:
        tick = next_tick(spec, cursor)
        if tick is None or tick > until:
            break
        found.append(tick)
        if len(found) > limit:
            found.pop(0)
            more = True
        cursor = tick
    return found, more


def next_ticks(spec: ScheduleSpec, after: dt.datetime, n: int) -> list[dt.datetime]:
    """The next ``n`` ticks after ``after`` (fewer if the schedule ends)."""
    out: list[dt.datetime] = []
    cursor = after
    while len(out) < n:
        tick = next_tick(spec, cursor)
        if tick is None:
            break
        out.append(tick)
        cursor = tick
    return out


def jitter_of(spec: ScheduleSpec, tick: dt.datetime) -> dt.timedelta:
    """How long ``tick``'s run is delayed: the same for every scheduler."""
    if spec.jitter <= 0:
        return dt.timedelta(0)
    digest = hashlib.sha256(f"{spec.name}|{tick.isoformat()}".encode()).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    return dt.timedelta(seconds=round(spec.jitter * fraction, 3))


def due_at(spec: ScheduleSpec, tick: dt.datetime) -> dt.datetime:
    """When ``tick``'s run is due: the tick plus its jitter."""
    return tick + jitter_of(spec, tick)


# -- which ticks fire ---------------------------------------------------------------


@dataclass(frozen=True)
class TickPlan:
    """The decision for the ticks due at one moment: ``fire`` (oldest first)
    and ``missed`` (with why)."""

    fire: list[dt.datetime]
    missed: list[tuple[dt.datetime, str]]


def plan_ticks(
    spec: ScheduleSpec, due: list[dt.datetime], now: dt.datetime, late_after: float
) -> TickPlan:
    """Apply the catch-up policy to the ticks ``due`` (oldest first, all due).

    A tick due less than ``late_after`` seconds ago is on time and fires
    whatever the policy (a busy scheduler is not a downtime). The others were
    missed: ``none`` fires none of them, ``latest`` the newest one (when no
    tick is on time), ``all`` the newest ``max_catchup``; only those within
    ``catchup_window`` of now fire. The rest are recorded as missed.
    """
    late_limit = now - dt.timedelta(seconds=late_after)
    window_limit = now - dt.timedelta(seconds=spec.catchup_window)
    on_time = [t for t in due if due_at(spec, t) >= late_limit]
    late = [t for t in due if due_at(spec, t) < late_limit]
    in_window = [t for t in late if due_at(spec, t) >= window_limit]
    chosen: list[dt.datetime] = []
    if spec.catchup == CatchUp.LATEST and in_window and not on_time:
        chosen = in_window[-1:]
    elif spec.catchup == CatchUp.ALL:
        chosen = in_window[-spec.max_catchup :]
    picked = set(chosen)
    missed: list[tuple[dt.datetime, str]] = []
    for t in late:
        if t in picked:
            continue
        if t not in in_window:
            why = "outside the catch-up window"
        elif spec.catchup == CatchUp.NONE:
            why = "catch-up policy 'none'"
        elif spec.catchup == CatchUp.LATEST:
            why = "catch-up policy 'latest' ran a newer tick"
        else:
            why = f"more than max_catchup={spec.max_catchup} missed ticks"
        missed.append((t, why))
    return TickPlan(sorted(chosen + on_time), missed)


@dataclass(frozen=True)
class OverlapDecision:
    """What one tick does given the runs of its schedule still active."""

    action: Literal["fire", "skip", "buffer"]
    cancel: bool = False  # cancel the active runs first


def decide_overlap(policy: Overlap, active: int, buffered: int) -> OverlapDecision:
    """The overlap policy as a table: ``active`` runs of the schedule are
    queued or running, ``buffered`` ticks already wait."""
    if active == 0 and buffered == 0:
        return OverlapDecision("fire")
    if policy == Overlap.ALLOW:
        return OverlapDecision("fire")
    if policy == Overlap.CANCEL_OTHER:
        return OverlapDecision("fire", cancel=active > 0)
    if policy == Overlap.BUFFER_ALL:
        return OverlapDecision("buffer")
    if policy == Overlap.BUFFER_ONE:
        return OverlapDecision("buffer" if buffered == 0 else "skip")
    return OverlapDecision("skip")  # SKIP; with nothing active, ``buffered`` is 0 here

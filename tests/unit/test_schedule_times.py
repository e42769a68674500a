"""Due-time computation: golden daylight-saving cases, leap days, intervals,
and the catch-up and overlap policies as tables."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from pydantic import ValidationError

from ferryman.domain.schedules import (
    CatchUp,
    Overlap,
    ScheduleSpec,
    decide_overlap,
    due_at,
    jitter_of,
    next_tick,
    next_ticks,
    plan_ticks,
    ticks_between,
)

UTC = dt.UTC


def spec(**kw: Any) -> ScheduleSpec:
    return ScheduleSpec.model_validate({"name": "s", "pipeline": "p", **kw})


def utc(*a: int) -> dt.datetime:
    return dt.datetime(*a, tzinfo=UTC)


def hm(ticks: list[dt.datetime]) -> list[str]:
    return [t.strftime("%m-%d %H:%M") for t in ticks]


# -- golden daylight-saving cases (UTC instants) ------------------------------------

GOLDEN = [
    # America/New_York, spring forward 2026-03-08 02:00 EST -> 03:00 EDT
    (
        "30 2 * * *",
        "America/New_York",
        "shift",
        "once",
        utc(2026, 3, 6, 12),
        ["03-07 07:30", "03-08 07:30", "03-09 06:30"],
    ),
    (
        "30 2 * * *",
        "America/New_York",
        "skip",
        "once",
        utc(2026, 3, 6, 12),
        ["03-07 07:30", "03-09 06:30", "03-10 06:30"],
    ),
    # a shifted 02:30 and a real 03:30 are one instant: one tick
    (
        "30 2,3 * * *",
        "America/New_York",
        "shift",
        "once",
        utc(2026, 3, 8, 0),
        ["03-08 07:30", "03-09 06:30", "03-09 07:30"],
    ),
    # New York, fall back 2026-11-01 02:00 EDT -> 01:00 EST: 01:30 happens twice
    (
        "30 1 * * *",
        "America/New_York",
        "shift",
        "once",
        utc(2026, 10, 31, 12),
        ["11-01 05:30", "11-02 06:30"],
    ),
    (
        "30 1 * * *",
        "America/New_York",
        "shift",
        "twice",
        utc(2026, 10, 31, 12),
        ["11-01 05:30", "11-01 06:30", "11-02 06:30"],
    ),
    (
        "*/30 * * * *",
        "America/New_York",
        "shift",
        "twice",
        utc(2026, 11, 1, 4, 50),
        ["11-01 05:00", "11-01 05:30", "11-01 06:00", "11-01 06:30", "11-01 07:00"],
    ),
    # with "once" the repeated hour runs once: an hour without ticks in UTC
    (
        "*/30 * * * *",
        "America/New_York",
        "shift",
        "once",
        utc(2026, 11, 1, 4, 50),
        ["11-01 05:00", "11-01 05:30", "11-01 07:00", "11-01 07:30"],
    ),
    # Europe/London, spring forward 2026-03-29 01:00 GMT -> 02:00 BST
    (
        "30 1 * * *",
        "Europe/London",
        "shift",
        "once",
        utc(2026, 3, 28, 12),
        ["03-29 01:30", "03-30 00:30"],
    ),
    (
        "30 1 * * *",
        "Europe/London",
        "skip",
        "once",
        utc(2026, 3, 28, 12),
        ["03-30 00:30", "03-31 00:30"],
    ),
    # London, fall back 2026-10-25 02:00 BST -> 01:00 GMT
    (
        "30 1 * * *",
        "Europe/London",
        "shift",
        "twice",
        utc(2026, 10, 24, 12),
        ["10-25 00:30", "10-25 01:30", "10-26 01:30"],
    ),
    (
        "30 1 * * *",
        "Europe/London",
        "shift",
        "once",
        utc(2026, 10, 24, 12),
        ["10-25 00:30", "10-26 01:30"],
    ),
    # Australia/Lord_Howe: 30-minute shifts. Forward 2026-10-04 02:00 -> 02:30
    # (+10:30 -> +11: 02:15 shifts to 02:45), back 2026-04-05 02:00 -> 01:30 (+11 -> +10:30)
    (
        "15 2 * * *",
        "Australia/Lord_Howe",
        "shift",
        "once",
        utc(2026, 10, 2, 12),
        ["10-02 15:45", "10-03 15:45", "10-04 15:15"],
    ),
    (
        "15 2 * * *",
        "Australia/Lord_Howe",
        "skip",
        "once",
        utc(2026, 10, 2, 12),
        ["10-02 15:45", "10-04 15:15"],
    ),
    (
        "45 1 * * *",
        "Australia/Lord_Howe",
        "shift",
        "twice",
        utc(2026, 4, 3, 12),
        ["04-03 14:45", "04-04 14:45", "04-04 15:15", "04-05 15:15"],
    ),
    # Asia/Kolkata: +05:30, no daylight saving
    (
        "0 3 * * 1-5",
        "Asia/Kolkata",
        "shift",
        "once",
        utc(2026, 1, 1),
        ["01-01 21:30", "01-04 21:30", "01-05 21:30"],
    ),
]


@pytest.mark.parametrize(("cron", "zone", "missing", "repeated", "after", "want"), GOLDEN)
def test_golden_dst(
    cron: str, zone: str, missing: str, repeated: str, after: dt.datetime, want: list[str]
) -> None:
    s = spec(cron=cron, timezone=zone, on_missing_time=missing, on_repeated_time=repeated)
    assert hm(next_ticks(s, after, len(want))) == want


def test_a_skipped_day_samoa_2011() -> None:
    """Pacific/Apia skipped 2011-12-30 (from -10 to +14): its noon is shifted
    a day, onto the next noon, and the two are one tick."""
    s = spec(cron="0 12 * * *", timezone="Pacific/Apia")
    got = next_ticks(s, utc(2011, 12, 29), 3)
    assert [t.isoformat() for t in got] == [
        "2011-12-29T22:00:00+00:00",
        "2011-12-30T22:00:00+00:00",
        "2011-12-31T22:00:00+00:00",
    ]


def test_leap_day_cron_fires_only_in_leap_years() -> None:
    s = spec(cron="0 0 29 2 *")
    got = next_ticks(s, utc(2026, 1, 1), 3)
    assert [t.date().isoformat() for t in got] == ["2028-02-29", "2032-02-29", "2036-02-29"]


def test_leap_day_in_a_zone() -> None:
    s = spec(cron="0 0 29 2 *", timezone="Asia/Kolkata")
    assert next_tick(s, utc(2026, 1, 1)) == utc(2028, 2, 28, 18, 30)


def test_cron_that_never_matches_is_refused() -> None:
    with pytest.raises(ValidationError, match="invalid cron '0 0 30 2 \\*'"):
        spec(cron="0 0 30 2 *")


def test_seconds_field() -> None:
    s = spec(cron="*/15 * * * * *")
    assert [t.second for t in next_ticks(s, utc(2026, 1, 1), 4)] == [15, 30, 45, 0]


def test_interval_is_anchored() -> None:
    s = spec(interval=60, start_at=utc(2026, 1, 1, 0, 0, 10))
    assert next_tick(s, utc(2025, 1, 1)) == utc(2026, 1, 1, 0, 0, 10)
    assert next_tick(s, utc(2026, 1, 1, 0, 5, 10)) == utc(2026, 1, 1, 0, 6, 10)
    assert next_tick(spec(interval=1), utc(2026, 1, 1, 0, 0, 0)) == utc(2026, 1, 1, 0, 0, 1)


def test_start_and_end() -> None:
    s = spec(cron="0 * * * *", start_at=utc(2026, 1, 1, 5), end_at=utc(2026, 1, 1, 7))
    assert hm(next_ticks(s, utc(2025, 1, 1), 10)) == ["01-01 05:00", "01-01 06:00", "01-01 07:00"]


def test_ticks_between_keeps_the_newest() -> None:
    s = spec(interval=1)
    got, more = ticks_between(s, utc(2026, 1, 1), utc(2026, 1, 2), limit=5)
    assert more and got[-1] == utc(2026, 1, 2) and len(got) == 5
    got, more = ticks_between(s, utc(2026, 1, 1), utc(2026, 1, 1, 0, 0, 3))
    assert not more and len(got) == 3


def test_jitter_is_deterministic_and_bounded() -> None:
    s = spec(interval=60, jitter=30)
    t = utc(2026, 1, 1)
    assert jitter_of(s, t) == jitter_of(s, t)
    assert dt.timedelta(0) <= jitter_of(s, t) <= dt.timedelta(seconds=30)
    assert due_at(s, t) >= t
    assert len({jitter_of(s, t + dt.timedelta(minutes=i)) for i in range(20)}) > 1


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"cron": "0 3 * *"}, "has 4 fields"),
        ({"cron": "61 * * * *"}, "invalid cron"),
        ({"cron": "0 3 * * *", "timezone": "Mars/Olympus"}, "unknown time zone"),
        ({}, "exactly one of"),
        ({"cron": "* * * * *", "interval": 5}, "exactly one of"),
        ({"interval": 0.5}, "greater than or equal to 1"),
        ({"interval": 5, "overlap": "sometimes"}, "overlap"),
        ({"interval": 5, "name": "bad name"}, "invalid schedule name"),
    ],
)
def test_bad_specs_say_what_is_wrong(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        spec(**kw)
    assert message in str(info.value)


# -- catch-up policy as a table ---------------------------------------------------------

NOW = utc(2026, 1, 1, 12)
HOURLY_DOWN_5H = [utc(2026, 1, 1, h) for h in range(8, 13)]  # 08:00..12:00; 12:00 on time


@pytest.mark.parametrize(
    ("policy", "max_catchup", "window", "fired", "missed"),
    [
        ("none", 10, 86400, ["12:00"], ["08:00", "09:00", "10:00", "11:00"]),
        # a tick is on time: 'latest' adds nothing
        ("latest", 10, 86400, ["12:00"], ["08:00", "09:00", "10:00", "11:00"]),
        ("all", 10, 86400, ["08:00", "09:00", "10:00", "11:00", "12:00"], []),
        ("all", 2, 86400, ["10:00", "11:00", "12:00"], ["08:00", "09:00"]),
        ("all", 10, 2.5 * 3600, ["10:00", "11:00", "12:00"], ["08:00", "09:00"]),
    ],
)
def test_catchup_table(
    policy: str, max_catchup: int, window: float, fired: list[str], missed: list[str]
) -> None:
    s = spec(cron="0 * * * *", catchup=policy, max_catchup=max_catchup, catchup_window=window)
    plan = plan_ticks(s, HOURLY_DOWN_5H, NOW, late_after=60)
    assert [t.strftime("%H:%M") for t in plan.fire] == fired
    assert [t.strftime("%H:%M") for t, _ in plan.missed] == missed
    assert all(why for _, why in plan.missed)


def test_catchup_latest_runs_the_newest_missed_when_none_is_on_time() -> None:
    s = spec(cron="0 * * * *", catchup="latest")
    due = HOURLY_DOWN_5H[:-1]  # up to 11:00, now 12:00: all late
    plan = plan_ticks(s, due, NOW, late_after=60)
    assert plan.fire == [utc(2026, 1, 1, 11)]
    assert len(plan.missed) == 3
    plan = plan_ticks(s.model_copy(update={"catchup_window": 1800.0}), due, NOW, late_after=60)
    assert plan.fire == [] and len(plan.missed) == 4
    assert plan.missed[0][1] == "outside the catch-up window"


def test_a_busy_scheduler_is_not_a_downtime() -> None:
    s = spec(interval=1, catchup=CatchUp.NONE)
    due = [NOW - dt.timedelta(seconds=i) for i in (5, 4, 3, 2, 1, 0)]
    plan = plan_ticks(s, due, NOW, late_after=60)
    assert plan.fire == due and plan.missed == []


# -- overlap policy as a table --------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "active", "buffered", "action", "cancel"),
    [
        (Overlap.ALLOW, 0, 0, "fire", False),
        (Overlap.ALLOW, 2, 0, "fire", False),
        (Overlap.SKIP, 0, 0, "fire", False),
        (Overlap.SKIP, 1, 0, "skip", False),
        (Overlap.BUFFER_ONE, 1, 0, "buffer", False),
        (Overlap.BUFFER_ONE, 1, 1, "skip", False),
        (Overlap.BUFFER_ONE, 0, 1, "skip", False),
        (Overlap.BUFFER_ALL, 1, 0, "buffer", False),
        (Overlap.BUFFER_ALL, 1, 5, "buffer", False),
        (Overlap.BUFFER_ALL, 0, 2, "buffer", False),
        (Overlap.CANCEL_OTHER, 1, 0, "fire", True),
        (Overlap.CANCEL_OTHER, 0, 0, "fire", False),
    ],
)
def test_overlap_table(
    policy: Overlap, active: int, buffered: int, action: str, cancel: bool
) -> None:
    got = decide_overlap(policy, active, buffered)
    assert (got.action, got.cancel) == (action, cancel)

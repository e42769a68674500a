"""The retry schedule of event deliveries and run-completion callbacks
(issue 12, item 4): growing intervals up to hours that span the maximum
age, and dead-lettering by age, not by an attempt count reached in 40 min."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from ferryman.domain.retry import RetrySchedule, parse_intervals
from ferryman.engine.callback_sender.posting import Claimed as CallbackClaimed
from ferryman.engine.event_deliverer.queue import Claimed
from ferryman.engine.event_deliverer.results import Results
from ferryman.settings import Settings

NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)


def delivery(attempts: int, age: float) -> Claimed:
    return Claimed(
        id=1, subscription_id="s", run_id="r", attempts=attempts,
        queued_at=NOW - dt.timedelta(seconds=age), url="http://127.0.0.1:1/", format="ferryman",
        secret="whsec_x", headers={}, event=None,
    )  # fmt: skip


def attempts_until_dead(results: Results) -> tuple[int, float, float]:
    """Fail every attempt on the default schedule: the attempt that is
    dead-lettered, its time after the first, and the scheduled waits' total."""
    schedule = results.settings.delivery.schedule()
    n, t, total = 1, 0.0, 0.0
    while not results._exhausted(delivery(n, t), NOW):
        t += results._delay(n, None, results.settings.delivery.max_age - t)
        total += schedule.base_after(n)
        n += 1
        assert n < 10_000
    return n, t, total


def test_the_default_schedule_grows_to_hours_like_webhook_services() -> None:
    s = Settings()
    for group in (s.delivery, s.callbacks):
        sched = group.schedule()
        assert sched.intervals == (5, 300, 1800, 7200, 18000, 36000)
        assert list(sched.intervals) == sorted(sched.intervals)
        assert group.max_attempts is None  # no count limit: the age decides
        assert group.max_age == 86400


def test_the_default_schedule_spans_the_maximum_age() -> None:
    s = Settings()
    sched = s.delivery.schedule()
    results = Results(None, s)  # type: ignore[arg-type]  # the store is not used here
    n, t, total = attempts_until_dead(results)
    # The schedule's waits span the maximum age (to within one interval) …
    assert total >= s.delivery.max_age - sched.longest
    assert sched.elapsed_before(n) == total
    # … and the last attempt comes right at it, not before: dead by age.
    assert t == pytest.approx(s.delivery.max_age)
    print(f"dead-lettered at attempt {n}, {t / 3600:.1f} h after the first")


def test_dead_letter_is_by_age_not_by_a_forty_minute_attempt_count() -> None:
    s = Settings()
    results = Results(None, s)  # type: ignore[arg-type]
    # The old defaults (15 attempts, backoff capped at 300 s) gave up here:
    assert not results._exhausted(delivery(15, 40 * 60), NOW)
    assert not results._exhausted(delivery(100, 23 * 3600), NOW)
    assert results._exhausted(delivery(8, 24 * 3600), NOW)
    # an explicit attempt limit still applies
    limited = Settings(delivery_max_attempts=3)
    assert Results(None, limited)._exhausted(delivery(3, 10), NOW)  # type: ignore[arg-type]


def test_callbacks_die_by_age_too() -> None:
    from ferryman.engine.callback_sender.loop import CallbackSender

    s = Settings()

    def cb(attempts: int, age: float) -> CallbackClaimed:
        return CallbackClaimed("c", "r", "webhook", {}, attempts, NOW - dt.timedelta(seconds=age))

    exhausted = CallbackSender._exhausted
    fake = type("S", (), {"settings": s})()
    assert not exhausted(fake, cb(12, 40 * 60), NOW)  # type: ignore[arg-type]
    assert exhausted(fake, cb(9, 24 * 3600), NOW)  # type: ignore[arg-type]


def test_jitter_stays_within_its_band() -> None:
    sched = RetrySchedule.parse("5s,5m")
    rng = random.Random(7)
    for attempt, base in ((1, 5), (2, 300), (9, 300)):
        for _ in range(50):
            assert base * 0.8 <= sched.delay_after(attempt, rng) <= base * 1.2


def test_an_explicit_backoff_gives_an_exponential_schedule() -> None:
    s = Settings(delivery_backoff=1, delivery_max_backoff=10)
    assert s.delivery.schedule().intervals == (1, 2, 4, 8, 10)
    assert s.delivery.retry_after_cap() == 10
    assert Settings().delivery.retry_after_cap() == 36000  # the longest interval


@pytest.mark.parametrize(
    ("text", "message"),
    [("5s,,2h", "empty interval"), ("5s,soon", "'soon' is not an interval"),
     ("-5s", "finite number >= 0"), ("inf", "finite number >= 0")],
)  # fmt: skip
def test_bad_schedules_say_which_interval_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_intervals(text)


def test_units() -> None:
    assert parse_intervals("5, 5s, 5m, 2h, 1d, 0.5m") == (5, 5, 300, 7200, 86400, 30)

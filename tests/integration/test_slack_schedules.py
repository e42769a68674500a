"""The bot's schedule commands over real HTTP (uvicorn on loopback, a fake
Slack on loopback, signed requests), on SQLite and PostgreSQL: ``schedule``
makes a native schedule through the schedules service (what the REST API
reads back), ``schedules`` lists, ``pause``/``resume``/``unschedule`` change
it; viewers may only list; bad parameters, cron and time zones create nothing."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from tests.slack_fake import mention
from tests.slack_support import Bot, running_bot

from ferryman.domain.schedules import next_ticks
from ferryman.services import schedules as svc
from ferryman.services.ticks import Ticks
from ferryman.settings import Settings
from ferryman.slack.grammar import decode_b64
from ferryman.store.engine import Store
from ferryman.store.tables import schedules, slack_commands

PARIS_NAME = "napping-0_9_x_x_1-5"


@pytest.fixture
def bot(store: Store, settings: Settings) -> Iterator[Bot]:
    with running_bot(store, settings) as b:
        yield b


def text_of(call: dict[str, Any]) -> str:
    return str(call.get("text", ""))


def stored(bot: Bot) -> dict[str, svc.Schedule]:
    with bot.store.read() as conn:
        return {s.name: s for s in svc.list_schedules(conn, "default")}


def test_schedule_creates_a_native_schedule_with_its_next_fire_times(bot: Bot) -> None:
    answer = text_of(
        bot.say('schedule Napping "0 9 * * 1-5" Europe/Paris ```{"seconds": 2,}```', user="UOPS")
    )
    s = stored(bot)[PARIS_NAME]
    assert (s.spec.pipeline, s.spec.cron, s.spec.timezone) == (
        "napping",
        "0 9 * * 1-5",
        "Europe/Paris",
    )
    assert s.spec.params == {"seconds": 2} and not s.spec.paused
    assert (s.source, s.created_by) == ("slack", "olga")
    assert f"`{PARIS_NAME}`" in answer and "created" in answer
    # the next 3 fire times, in Paris time (09:00) and in UTC (08:00 or 07:00)
    ticks = next_ticks(s.spec, dt.datetime.now(dt.UTC), 3)
    assert len(ticks) == 3
    for t in ticks:
        local = t.astimezone(s.spec.zone)
        assert local.hour == 9
        assert local.strftime("%a %Y-%m-%d 09:00 %Z") in answer
        assert t.strftime("(%H:%M UTC)") in answer
    assert answer.count("\n• ") == 3
    assert bot.runs() == []  # a schedule starts nothing now


def test_a_given_name_backticked_cron_and_utc_by_default(bot: Bot) -> None:
    answer = text_of(
        bot.say(
            'schedule export-data `*/15 * * * *` as quarterly ```{"day": "2024-01-01"}```',
            user="UOPS",
        )
    )
    s = stored(bot)["quarterly"]
    assert (s.spec.cron, s.spec.timezone, s.spec.params) == (
        "*/15 * * * *",
        "UTC",
        {"day": "2024-01-01"},
    )
    assert "`quarterly`" in answer and answer.count(" UTC") >= 3


def test_schedules_lists_and_pause_resume_unschedule_change(bot: Bot) -> None:
    bot.say('schedule napping "0 9 * * 1-5" Europe/Paris', user="UOPS")
    bot.say('schedule export_data "30 2 * * *" as nightly', user="UOPS")
    listed = text_of(bot.say("schedules", user="UVIEW"))
    assert "2 schedule(s)" in listed and PARIS_NAME in listed and "nightly" in listed
    assert "next " in listed and "Europe/Paris" in listed
    only = text_of(bot.say("schedules Export-Data", user="UVIEW"))
    assert "nightly" in only and PARIS_NAME not in only

    assert "paused" in text_of(bot.say("pause nightly", user="UOPS"))
    nightly = stored(bot)["nightly"]
    assert nightly.spec.paused and nightly.next_due_at is None
    assert "already paused" in text_of(bot.say("pause nightly", user="UOPS"))
    assert "paused" in text_of(bot.say("schedules", user="UVIEW"))

    resumed = text_of(bot.say("resume nightly", user="UOPS"))
    assert "resumed" in resumed and "02:30 UTC" in resumed
    nightly = stored(bot)["nightly"]
    assert not nightly.spec.paused and nightly.next_due_at is not None

    assert "deleted" in text_of(bot.say("unschedule nightly", user="UOPS"))
    assert set(stored(bot)) == {PARIS_NAME}
    missing = text_of(bot.say("pause nightlyy", user="UOPS"))
    assert "no schedule 'nightlyy'" in missing
    close = text_of(bot.say(f"unschedule {PARIS_NAME}x", user="UOPS"))
    assert PARIS_NAME in close and set(stored(bot)) == {PARIS_NAME}


def test_a_viewer_may_list_but_not_schedule_pause_or_unschedule(bot: Bot) -> None:
    bot.say('schedule export_data "30 2 * * *" as nightly', user="UOPS")
    before = stored(bot)
    attempts = [
        'schedule napping "* * * * *" ```{"seconds": 1}```',
        "pause nightly",
        "resume nightly",
        "unschedule nightly",
        # a user id smuggled in the text is only text
        "unschedule nightly <@UADMIN>",
    ]
    for text in attempts:
        assert "needs the operator role" in text_of(bot.say(text, user="UVIEW")), text
    # unknown Slack users are nobody
    assert "know you" in text_of(bot.say("unschedule nightly", user="USTRANGER"))
    assert stored(bot) == before
    with bot.store.read() as conn:
        rows = conn.execute(
            sa.select(slack_commands.c.command, slack_commands.c.outcome).where(
                slack_commands.c.slack_user != "UOPS"
            )
        ).all()
    assert sorted(rows) == sorted(
        [
            ("schedule", "refused"),
            ("pause", "refused"),
            ("resume", "refused"),
            ("unschedule", "refused"),
            ("unschedule", "refused"),
            ("unschedule", "refused"),
        ]
    )
    assert "nightly" in text_of(bot.say("schedules", user="UVIEW"))


def test_bad_parameters_cron_and_time_zones_create_nothing(bot: Bot) -> None:
    bad = text_of(
        bot.say('schedule napping "0 9 * * *" ```{"seconds": "soon", "extra": 1}```', user="UOPS")
    )
    assert "2 parameter error(s)" in bad and "seconds" in bad and "extra" in bad
    assert "nothing created" in bad
    cron = text_of(bot.say('schedule napping "0 25 * * *"', user="UOPS"))
    assert "invalid cron" in cron and "nothing created" in cron
    fields = text_of(bot.say('schedule napping "0 9 * *"', user="UOPS"))
    assert "4 fields" in fields
    zone = text_of(bot.say('schedule napping "0 9 * * *" Paris', user="UOPS"))
    assert "unknown time zone 'Paris'" in zone and "Europe/Paris" in zone
    unquoted = text_of(bot.say("schedule napping 0 9 * * *", user="UOPS"))
    assert "quotes" in unquoted
    extra = text_of(bot.say('schedule napping "0 9 * * *" UTC tomorrow', user="UOPS"))
    assert "tomorrow" in extra
    pipeline = text_of(bot.say('schedule naping "0 9 * * *"', user="UOPS"))
    assert "napping" in pipeline
    usage = text_of(bot.say("schedule napping", user="UOPS"))
    assert "needs a pipeline and a cron" in usage
    with bot.store.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(schedules)).scalar() == 0
    # a name taken is refused with a way out, the first schedule untouched
    bot.say('schedule napping "0 9 * * *" ```{"seconds": 1}```', user="UOPS")
    taken = text_of(bot.say('schedule napping "0 9 * * *" ```{"seconds": 5}```', user="UOPS"))
    assert "already exists" in taken and "as <name>" in taken
    assert stored(bot)["napping-0_9_x_x_x"].spec.params == {"seconds": 1}


def test_create_recurring_points_to_a_working_schedule_command(bot: Bot) -> None:
    answer = text_of(bot.say('create_recurring napping ```{"seconds": 2}```', user="UOPS"))
    native = answer.split("```")[3]
    assert native.startswith('schedule napping "0 9 * * 1-5" Europe/Paris b64_')
    made = text_of(bot.say(native, user="UOPS"))
    assert "created" in made
    assert stored(bot)[PARIS_NAME].spec.params == {"seconds": 2}


def test_help_lists_the_schedule_commands(bot: Bot) -> None:
    help_ = text_of(bot.say("help", user="UVIEW"))
    for usage in ("schedule <pipeline>", "schedules [pipeline]", "unschedule <name>"):
        assert usage in help_
    assert "pause <name>" in help_ and "resume <name>" in help_


def test_the_examples_of_the_docs_work(bot: Bot) -> None:
    """Every ``@ferryman ...`` line of docs/slack.md's Schedules section and
    of the migration guide's reminders section, sent in order."""
    root = Path(__file__).resolve().parents[2] / "docs"
    slack = (root / "slack.md").read_text(encoding="utf-8")
    section = slack.split("### Schedules", 1)[1].split("\n### ", 1)[0]
    guide = (root / "migrating-from-kfp-bot.md").read_text(encoding="utf-8")
    section += guide.split("From reminders to native schedules", 1)[1]
    lines = [ln.strip() for ln in section.splitlines() if ln.strip().startswith("@ferryman ")]
    assert len(lines) == 7
    # the guide's reminder payload is what its pipeline takes
    (pasted,) = [ln for ln in lines if "b64_" in ln]
    assert decode_b64(pasted.split("b64_")[1]) == {"day": "today"}
    answers = [text_of(bot.say(ln.removeprefix("@ferryman "), user="UOPS")) for ln in lines]
    assert "created" in answers[0] and "created" in answers[1]
    assert "nightly-export" in answers[2]
    assert "paused" in answers[3] and "resumed" in answers[4] and "deleted" in answers[5]
    assert "already exists" in answers[6]  # the guide's schedule is the first example's
    assert set(stored(bot)) == {"export_data-0_9_x_x_1-5"}


def test_one_schedule_for_an_event_sent_three_times_with_typographic_quotes(bot: Bot) -> None:
    ev = mention("schedule napping \u201c0 9 * * 1-5\u201d Europe/Paris", user="UOPS")
    for retry in ("", "1", "2"):
        headers = {"X-Slack-Retry-Num": retry, "X-Slack-Retry-Reason": "http_timeout"}
        assert bot.post.event(ev, **(headers if retry else {})).status_code == 200
    bot.fake.wait_for("chat.postMessage", 1)
    time.sleep(0.5)
    assert len(bot.fake.of("chat.postMessage")) == 1  # answered once, no "already exists"
    assert "created" in bot.fake.of("chat.postMessage")[0].args["text"]
    assert list(stored(bot)) == [PARIS_NAME]


def test_unschedule_of_a_declared_schedule_says_the_deploy_brings_it_back(bot: Bot) -> None:
    spec = svc.parse_spec({"name": "declared", "pipeline": "napping", "cron": "0 4 * * *"})
    with bot.store.write() as conn:
        svc.reconcile(conn, "default", "napping", [spec])
    assert "declared by the pipeline" in text_of(bot.say("schedules", user="UVIEW"))
    answer = text_of(bot.say("unschedule default/declared", user="UOPS"))
    assert "deleted" in answer and "next deploy" in answer
    assert stored(bot) == {}


def test_a_schedule_made_in_slack_fires_its_runs(bot: Bot) -> None:
    bot.say('schedule napping "0 9 * * *" as morning ```{"seconds": 0.1}```', user="UOPS")
    due = stored(bot)["morning"].next_due_at
    assert due is not None
    due = due if due.tzinfo else due.replace(tzinfo=dt.UTC)
    ticks = Ticks(bot.store, late_after=600)
    assert ticks.run_due(due - dt.timedelta(seconds=1)).fired == 0
    assert ticks.run_due(due).fired == 1
    (run,) = bot.runs()
    assert run.params == {"seconds": 0.1}
    assert run.trigger["kind"] == "schedule" and run.trigger["schedule"] == "morning"

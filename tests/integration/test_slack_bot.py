"""The Slack bot over real HTTP (uvicorn on loopback) with a fake Slack Web
API on loopback, on SQLite and PostgreSQL: signatures, duplicates, every
command, users and roles, buttons, the slash command and the launch form.
Runs are driven to their end by a real worker in the test's process; the
completion goes through the real callback sender."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from tests.api_support import live_server
from tests.slack_fake import action_body, fake_slack, mention, sign, slash
from tests.slack_support import Bot, Poster, bot_settings, running_bot, seed

from ferryman.api.app import create_app
from ferryman.settings import Settings
from ferryman.store.engine import Store
from ferryman.store.tables import runs, slack_commands


@pytest.fixture
def bot(store: Store, settings: Settings) -> Iterator[Bot]:
    with running_bot(store, settings) as b:
        yield b


def text_of(call: dict[str, Any]) -> str:
    return str(call.get("text", ""))


# -- verification ---------------------------------------------------------------------


def test_forged_stale_and_missing_signatures_are_refused(bot: Bot) -> None:
    body = json.dumps(mention("run export_data")).encode()
    cases = {
        "missing": {},
        "forged": sign("not-the-secret", body),
        "stale": sign(bot.post.secret, body, timestamp=int(time.time()) - 6 * 60),
        "future": sign(bot.post.secret, body, timestamp=int(time.time()) + 6 * 60),
        "garbled": {**sign(bot.post.secret, body), "X-Slack-Signature": "v0=00"},
    }
    for name, headers in cases.items():
        r = bot.post.raw(body, headers, "application/json")
        assert r.status_code == 401, name
    # a signed body changed afterwards
    headers = sign(bot.post.secret, body)
    r = bot.post.raw(body.replace(b"export_data", b"broken_export"), headers, "application/json")
    assert r.status_code == 401
    time.sleep(0.3)
    assert bot.runs() == [] and bot.fake.of("chat.postMessage") == []
    with bot.store.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(slack_commands)).scalar() == 0


def test_url_verification_challenge(bot: Bot) -> None:
    r = bot.post.event({"type": "url_verification", "challenge": "abc123", "token": "t"})
    assert r.status_code == 200 and "abc123" in r.text


def test_the_same_event_three_times_starts_one_run(bot: Bot) -> None:
    ev = mention('run export_data ```{"day": "2024-02-02"}```', user="UOPS")
    statuses = [
        bot.post.event(ev).status_code,
        bot.post.event(
            ev, **{"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}
        ).status_code,
        bot.post.event(
            ev, **{"X-Slack-Retry-Num": "2", "X-Slack-Retry-Reason": "http_timeout"}
        ).status_code,
    ]
    assert statuses == [200, 200, 200]
    bot.fake.wait_for("chat.postMessage", 1)
    time.sleep(0.5)
    assert len(bot.runs()) == 1
    assert len(bot.fake.of("chat.postMessage")) == 1  # answered once


# -- commands --------------------------------------------------------------------------


def test_run_with_tolerant_json_and_links(bot: Bot) -> None:
    text = 'run Export-Data ```{\n  // the day to export\n  "day": "<https://x.example.com/d|2024-03-03>",\n}```'
    answer = bot.say(text, user="UOPS")
    (run,) = bot.runs()
    assert run.params == {"day": "https://x.example.com/d"}
    assert run.trigger == {"kind": "slack", "user": "olga"}
    assert run.options["slack_channel"] == "C1" and run.options["slack_thread"]
    assert run.name in text_of(answer) and f"/runs/{run.id}" in text_of(answer)
    actions = (
        [b for b in answer["blocks"] if b["type"] == "actions"]
        if isinstance(answer.get("blocks"), list)
        else json.loads(answer["blocks"])
    )
    assert "ferryman_cancel" in json.dumps(actions)

    bot.finish()
    done = bot.fake.wait_for("chat.postMessage", 2)[1].args
    assert done["thread_ts"] == answer["thread_ts"] and "succeeded" in text_of(done)


@pytest.mark.parametrize("dot", ["", "."])
def test_run_with_a_b64_payload(bot: Bot, dot: str) -> None:
    import base64

    payload = base64.b64encode(json.dumps({"day": "2024-04-04"}).encode()).decode()
    bot.say(f"run export_data b64_{payload}{dot}", user="UOPS")
    (run,) = bot.runs()
    assert run.params == {"day": "2024-04-04"}


def test_parameter_errors_are_listed_and_nothing_starts(bot: Bot) -> None:
    answer = bot.say('run napping ```{"seconds": "soon", "extra": 1}```', user="UOPS")
    assert "seconds" in text_of(answer) and "extra" in text_of(answer)
    assert "nothing started" in text_of(answer)
    assert bot.runs() == []
    answer = bot.say('run napping ```{"seconds": 1,,}```', user="UOPS")
    assert "not JSON" in text_of(answer)


def test_unknown_command_and_pipeline_get_closest_names(bot: Bot) -> None:
    assert "`status`" in text_of(bot.say("stauts abc", user="UVIEW"))
    assert "export_data" in text_of(bot.say("run export_dta", user="UOPS"))
    assert "help" in text_of(bot.say("", user="UVIEW")).lower()


def test_status_logs_list_describe_cancel_rerun(bot: Bot) -> None:
    bot.say("run broken-export", user="UOPS")
    (run,) = bot.runs()
    bot.finish()
    assert "failed" in text_of(bot.say(f"status {run.name}", user="UVIEW"))
    logs = text_of(bot.say(f"logs {run.name}", user="UVIEW"))
    assert "connecting with token" in logs and "explode" in logs
    listed = text_of(bot.say("list broken_export", user="UVIEW"))
    assert run.name in listed
    described = text_of(bot.say("describe napping", user="UVIEW"))
    assert "seconds" in described and "number" in described and "3.0" in described
    again = text_of(bot.say(f"rerun {run.name}", user="UOPS"))
    assert "re-run started" in again
    assert len(bot.runs()) == 2
    bot.say('run napping ```{"seconds": 30}```', user="UOPS")
    napping = next(r for r in bot.runs() if r.pipeline == "napping")
    assert "cancel requested" in text_of(bot.say(f"cancel {napping.name}", user="UOPS"))
    with bot.store.read() as conn:
        assert conn.execute(
            sa.select(runs.c.cancel_requested).where(runs.c.id == napping.id)
        ).scalar()


def test_create_recurring_answers_a_remind_command(bot: Bot) -> None:
    import base64

    answer = text_of(bot.say('create_recurring napping ```{"seconds": 2,}```', user="UOPS"))
    assert "/remind" in answer and "schedule" in answer
    token = answer.split("b64_")[1].split('"')[0]
    padded = token + "=" * (-len(token) % 4)
    assert json.loads(base64.urlsafe_b64decode(padded)) == {"seconds": 2}
    assert bot.runs() == []
    # the /remind command's text, pasted back (with the trailing dot /remind adds)
    bot.say(f"run napping b64_{token}.", user="UOPS")
    assert bot.runs()[0].params == {"seconds": 2}


# -- who may do what ---------------------------------------------------------------------


def test_unknown_users_are_refused_and_roles_decide(bot: Bot) -> None:
    assert "know you" in text_of(bot.say("run export_data", user="UNOBODY"))
    assert "know you" in text_of(bot.say("run export_data", user="USTRANGER"))
    assert "operator" in text_of(bot.say("run export_data", user="UVIEW"))
    assert bot.runs() == []
    # by e-mail (users.info), case ignored
    bot.say("run export_data", user="UMAIL")
    (run,) = bot.runs()
    assert run.trigger["user"] == "mail.user@example.com"
    with bot.store.read() as conn:
        rows = conn.execute(sa.select(slack_commands).order_by(slack_commands.c.created_at)).all()
    outcomes = [(r.slack_user, r.command, r.outcome) for r in rows]
    assert outcomes == [
        ("UNOBODY", "run", "refused"),
        ("USTRANGER", "run", "refused"),
        ("UVIEW", "run", "refused"),
        ("UMAIL", "run", "ok"),
    ]
    assert rows[-1].username == "mail.user@example.com" and rows[-1].run_id == run.id


def test_attacks_on_the_user_mapping(bot: Bot) -> None:
    # an e-mail never overrides an explicit Slack id mapping
    assert "know you" in text_of(bot.say("run export_data", user="UEVIL"))
    # a disabled user is nobody
    assert "know you" in text_of(bot.say("run export_data", user="UGONE"))
    # a user id smuggled in the text is only text
    assert "operator" in text_of(bot.say("run export_data <@UADMIN>", user="UVIEW"))
    assert bot.runs() == []  # (a viewer clicking a button: test_buttons)


def test_a_forged_user_in_a_badly_signed_body_does_nothing(bot: Bot) -> None:
    body = json.dumps(mention("run export_data", user="UADMIN")).encode()
    r = bot.post.raw(body, sign("guessed", body), "application/json")
    assert r.status_code == 401 and bot.runs() == []


def test_channel_allow_list(store: Store, settings: Settings) -> None:
    with fake_slack() as fake:
        s = bot_settings(settings, fake, slack_channels="CGOOD")
        seed(store)
        app = create_app(s, store)
        with live_server(app) as base:
            post = Poster(base)
            post.event(mention("run export_data", user="UOPS", channel="CBAD"))
            (call,) = fake.wait_for("chat.postMessage", 1)
            assert "channel" in call.args["text"]
            post.event(mention("run export_data", user="UOPS", channel="D123", channel_type="im"))
            post.event(mention("run export_data", user="UOPS", channel="CGOOD"))
            fake.wait_for("chat.postMessage", 3)
            with store.read() as conn:
                assert conn.execute(sa.select(sa.func.count()).select_from(runs)).scalar() == 2
        app.state.slack_bot.close()


# -- buttons, slash command, launch form ----------------------------------------------------


def _click(bot: Bot, action: str, run_id: str, user: str, message_ts: str) -> None:
    payload = {
        "type": "block_actions",
        "user": {"id": user},
        "team": {"id": "T1"},
        "api_app_id": "A1",
        "channel": {"id": "C1"},
        "container": {"type": "message", "message_ts": message_ts, "channel_id": "C1"},
        "message": {"ts": message_ts, "thread_ts": "1690000000.000001"},
        "trigger_id": "t.1",
        "actions": [
            {"action_id": action, "value": run_id, "type": "button", "action_ts": str(time.time())}
        ],
    }
    r = bot.post.form(action_body(payload))
    assert r.status_code == 200, r.text


def test_buttons(bot: Bot) -> None:
    answer = bot.say('run napping ```{"seconds": 30}```', user="UOPS")
    (run,) = bot.runs()
    _click(bot, "ferryman_cancel", run.id, "UVIEW", "1.1")  # a viewer may not
    refused = bot.fake.wait_for("chat.postMessage", 2)[1].args
    assert "operator" in text_of(refused)
    _click(bot, "ferryman_cancel", run.id, "UOPS", "1.1")
    bot.fake.wait_for("chat.postMessage", 3)
    bot.finish()
    with bot.store.read() as conn:
        assert (
            conn.execute(sa.select(runs.c.state).where(runs.c.id == run.id)).scalar() == "cancelled"
        )
    _click(bot, "ferryman_rerun", run.id, "UOPS", "1.1")
    bot.fake.wait_for("chat.postMessage", 5)
    assert len(bot.runs()) == 2
    _click(bot, "ferryman_logs", run.id, "UVIEW", "1.1")
    bot.fake.wait_for("chat.postMessage", 6)
    assert answer["thread_ts"]


def test_slash_command(bot: Bot) -> None:
    r = bot.post.form(slash('run export_data ```{"day": "2024-05-05"}```', user="UOPS"))
    assert r.status_code == 200
    (call,) = bot.fake.wait_for("chat.postMessage", 1)
    (run,) = bot.runs()
    assert run.params == {"day": "2024-05-05"} and run.name in call.args["text"]


def test_launch_form_and_invalid_submission(bot: Bot) -> None:
    r = bot.post.form(slash("launch napping", user="UOPS"))
    assert r.status_code == 200
    (opened,) = bot.fake.wait_for("views.open", 1)
    view = (
        json.loads(opened.args["view"])
        if isinstance(opened.args["view"], str)
        else opened.args["view"]
    )
    assert [b["block_id"] for b in view["blocks"]] == ["p_seconds"]

    def submit(value: str) -> Any:
        payload = {
            "type": "view_submission",
            "user": {"id": "UOPS"},
            "team": {"id": "T1"},
            "api_app_id": "A1",
            "trigger_id": f"t.{value}",
            "view": {
                "id": "V1",
                "type": "modal",
                "callback_id": view["callback_id"],
                "private_metadata": view["private_metadata"],
                "state": {
                    "values": {"p_seconds": {"value": {"type": "plain_text_input", "value": value}}}
                },
            },
        }
        return bot.post.form(action_body(payload))

    bad = submit("soon")
    assert bad.status_code == 200
    assert bad.json()["response_action"] == "errors" and "p_seconds" in bad.json()["errors"]
    assert bot.runs() == []
    good = submit("2")
    assert good.status_code == 200 and not good.content.strip()
    bot.fake.wait_for("chat.postMessage", 1)
    (run,) = bot.runs()
    assert run.params == {"seconds": 2}


# -- nothing leaks ------------------------------------------------------------------------


def test_internal_error_answers_an_error_id(
    bot: Bot, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from ferryman.slack import commands

    def broken(ctx: Any, cmd: Any) -> Any:
        raise RuntimeError(
            f"db password is hunter2 and token {bot.settings.slack.bot_token.get_secret_value()}"
        )  # type: ignore[union-attr]

    monkeypatch.setitem(
        commands.COMMANDS, "list", commands.Entry(broken, commands.Role.VIEWER, "list", "x")
    )
    answer = text_of(bot.say("list", user="UVIEW"))
    assert "error id" in answer and "hunter2" not in answer and "Traceback" not in answer
    error_id = answer.split("`")[1]
    assert any(error_id in r.getMessage() for r in caplog.records)
    assert "hunter2" not in bot.fake.everything()
    assert "SeCrEtBoTtOkEn" not in json.dumps([c.args for c in bot.fake.calls])


# -- the run message --------------------------------------------------------------------------


def test_run_message_updated_in_place_and_throttled(bot: Bot) -> None:
    from ferryman.slack.updater import RunMessageUpdater

    bot.say('run napping ```{"seconds": 0.5}```', user="UOPS")
    posted = bot.fake.of("chat.postMessage")[0]
    s = bot.settings.updated(slack_update_seconds=0.3)
    updater = RunMessageUpdater(bot.store, s)
    time.sleep(0.4)
    assert updater.turn() == 0  # nothing changed since it was posted: no edit
    assert updater.turn() == 0 and updater._due() == []  # looked at: not due again so soon
    bot.finish()
    time.sleep(0.4)
    updater.run_until_idle(20)
    (update,) = bot.fake.of("chat.update")
    assert update.args["ts"] == posted.answer["ts"] and update.args["channel"] == "C1"
    assert "succeeded" in update.args["text"]
    blocks = update.args["blocks"]
    blocks = json.loads(blocks) if isinstance(blocks, str) else blocks
    assert "ferryman_cancel" not in json.dumps(blocks) and "ferryman_logs" in json.dumps(blocks)
    time.sleep(0.4)
    updater.run_until_idle(5)
    assert len(bot.fake.of("chat.update")) == 1  # final: never edited again

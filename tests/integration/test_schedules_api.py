"""Schedules through the REST API (the Python client, sync and async, against
a real server on loopback) and the ``ferryman schedules`` CLI (a real
process, local database and ``--server``), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from test_schedules import deploy
from test_subscriptions_api import live, tokens  # noqa: F401 (the fixture)
from tests.cli_support import cli_environment, ferryman

from ferryman.client import ApiError, AsyncClient, Client
from ferryman.settings import Settings
from ferryman.store.engine import Store

NIGHTLY = {"name": "nightly", "pipeline": "fan", "cron": "0 3 * * 1-5",
           "timezone": "Asia/Kolkata", "params": {"n": 4}}  # fmt: skip


def test_operators_manage_viewers_read(
    store: Store,
    settings: Settings,
    tokens: dict[str, str],  # noqa: F811
) -> None:
    deploy(store)
    with (
        live(settings, store) as url,
        Client(url, token=tokens["operator"]) as op,
        Client(url, token=tokens["viewer"]) as viewer,
    ):
        created = op.create_schedule(NIGHTLY)
        assert created.next_fire_at is not None and created.created_by == "operator-bot"
        # the attack: a viewer tries every write
        for attempt in (
            lambda: viewer.create_schedule({**NIGHTLY, "name": "other"}),
            lambda: viewer.update_schedule("nightly", {"cron": "* * * * *"}),
            lambda: viewer.pause_schedule("nightly"),
            lambda: viewer.delete_schedule("nightly"),
            lambda: viewer.run_schedule_now("nightly"),
        ):
            with pytest.raises(ApiError) as info:
                attempt()
            assert info.value.status == 403
        assert viewer.get_schedule("nightly").params == {"n": 4}
        assert [s.name for s in viewer.list_schedules().items] == ["nightly"]
        nxt = viewer.next_fire_times("nightly", 3)
        assert nxt.timezone == "Asia/Kolkata" and len(nxt.items) == 3
        for item in nxt.items:
            assert (item.local.hour, item.local.minute) == (3, 0)
            assert item.local == item.utc
            assert item.local.weekday() < 5
        assert op.pause_schedule("nightly").paused
        resumed = op.resume_schedule("nightly")
        assert not resumed.paused and resumed.next_fire_at is not None
        out = op.run_schedule_now("nightly")
        ticks = viewer.schedule_ticks("nightly").items
        assert [t.run_id for t in ticks] == out.run_ids and ticks[0].kind == "manual"
        assert op.update_schedule("nightly", {"overlap": "allow"}).overlap == "allow"
        op.delete_schedule("nightly")
        with pytest.raises(ApiError) as info:
            viewer.get_schedule("nightly")
        assert info.value.status == 404

        async def from_async() -> list[str]:
            async with AsyncClient(url, token=tokens["operator"]) as c:
                await c.create_schedule({**NIGHTLY, "name": "async-made"})
                return [s.name for s in (await c.list_schedules()).items]

        assert asyncio.run(from_async()) == ["async-made"]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({**NIGHTLY, "cron": "0 25 * * *"}, "cron"),
        ({**NIGHTLY, "timezone": "Mars/Base"}, "unknown time zone"),
        ({**NIGHTLY, "params": {"n": "many"}}, "n"),
        ({**NIGHTLY, "params": {"nn": 1}}, "did you mean 'n'"),
        ({**NIGHTLY, "pipeline": "ghost"}, "no pipeline 'ghost'"),
        ({**NIGHTLY, "overlap": "never"}, "overlap"),
    ],
)
def test_bad_schedules_are_4xx_saying_what_is_wrong(
    store: Store,
    settings: Settings,
    tokens: dict[str, str],  # noqa: F811
    body: dict[str, object],
    says: str,
) -> None:
    deploy(store)
    with live(settings, store) as url:
        r = httpx.post(
            f"{url}/namespaces/default/schedules",
            json=body,
            headers={"Authorization": f"Bearer {tokens['operator']}"},
        )
    assert r.status_code in (400, 422), r.text
    assert says in r.text and "Traceback" not in r.text


def test_cli_local_and_config_file(store: Store, db_url: str, tmp_path: Path) -> None:
    deploy(store, "fan")
    env = cli_environment(tmp_path / "home", db_url)
    cfg = tmp_path / "shards.json"
    cfg.write_text("3")
    r = ferryman(env, "schedules", "add", "hourly", "fan", "--cron", "0 * * * *",
                 "--tz", "Europe/London", "-p", "n=5", "-p", f"shards=@{cfg}")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "created schedule hourly" in r.stdout
    r = ferryman(env, "schedules", "get", "hourly", "--json")
    assert json.loads(r.stdout)["params"] == {"n": 5, "shards": 3}
    r = ferryman(env, "schedules", "next", "hourly", "-n", "3", "--json")
    items = json.loads(r.stdout)["items"]
    assert len(items) == 3 and all(":00:00" in i["utc"] for i in items)
    assert ferryman(env, "schedules", "pause", "hourly").returncode == 0
    r = ferryman(env, "schedules", "ls")
    assert "hourly" in r.stdout and "paused" in r.stdout
    assert ferryman(env, "schedules", "resume", "hourly").returncode == 0
    r = ferryman(env, "schedules", "run", "hourly", "--now")
    assert r.returncode == 0 and "started run" in r.stdout
    r = ferryman(env, "schedules", "runs", "hourly", "--json")
    (tick,) = json.loads(r.stdout)
    assert tick["kind"] == "manual" and tick["run_state"] == "queued"
    assert ferryman(env, "schedules", "rm", "hourly").returncode == 0


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["add", "x", "fan", "--cron", "61 * * * *"], "invalid cron"),
        (["add", "x", "fan"], "exactly one of 'cron' and 'interval'"),
        (["add", "x", "ghost", "--every", "60"], "no pipeline 'ghost'"),
        (["add", "x", "fan", "--every", "60", "-p", "n=@/nonexistent.json"], "cannot read"),
        (["get", "nope"], "no schedule 'nope'"),
        (["run", "nope"], "--now"),
        (["backfill", "nope", "--from", "yesterday", "--to", "2026-01-01"], "not an ISO"),
    ],
)
def test_cli_user_mistakes_exit_2(
    store: Store, db_url: str, tmp_path: Path, args: list[str], says: str
) -> None:
    deploy(store, "fan")
    env = cli_environment(tmp_path / "home", db_url)
    r = ferryman(env, "schedules", *args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert says in r.stderr and "Traceback" not in r.stderr


def test_deploy_reconciles_declared_schedules(store: Store, db_url: str, tmp_path: Path) -> None:
    env = cli_environment(tmp_path / "home", db_url)
    source = (Path(__file__).parent.parent / "pipelines" / "scheduled.py").read_text()
    file = tmp_path / "scheduled.py"
    file.write_text(source)
    r = ferryman(env, "deploy", str(file))
    assert r.returncode == 0, r.stderr
    assert "schedule weekday-morning: created" in r.stdout
    listed = json.loads(ferryman(env, "schedules", "ls", "--json").stdout)
    got = {s["name"]: (s["source"], s["pipeline"], s["overlap"]) for s in listed}
    assert got == {"weekday-morning": ("pipeline", "greet", "skip"),
                   "every-900s": ("pipeline", "greet", "buffer_one")}  # fmt: skip
    # an operator pauses one; a re-deploy keeps the pause and changes nothing
    assert ferryman(env, "schedules", "pause", "weekday-morning").returncode == 0
    r = ferryman(env, "deploy", str(file))
    assert "schedule" not in r.stdout
    # the file changes: one schedule re-timed, one gone
    file.write_text(source.replace("0 3 * * 1-5", "30 4 * * *").replace(
        "        interval(900, overlap=\"buffer_one\"),\n", ""))  # fmt: skip
    r = ferryman(env, "deploy", str(file))
    assert "schedule weekday-morning: updated" in r.stdout
    assert "schedule every-900s: deleted" in r.stdout
    (one,) = json.loads(ferryman(env, "schedules", "ls", "--json").stdout)
    assert (one["cron"], one["paused"]) == ("30 4 * * *", True)
    # a name taken by a schedule made by hand is a clear error
    ferryman(env, "schedules", "rm", "weekday-morning")
    r = ferryman(env, "schedules", "add", "weekday-morning", "greet", "--every", "60")
    assert r.returncode == 0, r.stderr
    r = ferryman(env, "deploy", str(file))
    assert r.returncode == 2 and "already exists" in r.stderr


BOT = Path(__file__).parent.parent / "pipelines" / "bot.py"


def test_bot_config_is_checked_when_the_schedule_is_saved(
    store: Store, db_url: str, tmp_path: Path
) -> None:
    env = cli_environment(tmp_path / "home", db_url)
    assert ferryman(env, "deploy", str(BOT)).returncode == 0
    good, bad = tmp_path / "bot.json", tmp_path / "typo.json"
    good.write_text(json.dumps({"action": "post_summary", "channel": "#ops"}))
    bad.write_text(json.dumps({"action": "post_sumary"}))
    r = ferryman(env, "schedules", "add", "bot-typo", "bot", "--every", "60",
                 "-p", f"config=@{bad}")  # fmt: skip
    assert r.returncode == 2
    assert "config" in r.stderr and "'post_sumary' is not one of" in r.stderr
    r = ferryman(env, "schedules", "add", "bot", "bot", "--every", "60", "-p", f"config=@{good}")
    assert r.returncode == 0, r.stderr
    stored = json.loads(ferryman(env, "schedules", "get", "bot", "--json").stdout)
    assert stored["params"] == {"config": {"action": "post_summary", "channel": "#ops"}}


def test_local_test_run_with_a_params_file(tmp_path: Path) -> None:
    """``ferryman run FILE:PIPE --params-file bot.json``: the run's exit code
    says how it went; an unknown action never starts a run."""
    env = cli_environment(tmp_path / "home")
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"config": {"action": "refresh_cache"}}))
    r = ferryman(env, "run", f"{BOT}:bot", "--params-file", str(params))
    assert r.returncode == 0, r.stderr
    params.write_text(json.dumps({"config": {"action": "launch_rockets"}}))
    r = ferryman(env, "run", f"{BOT}:bot", "--params-file", str(params))
    assert r.returncode == 2
    assert "'launch_rockets' is not one of" in r.stderr and "Traceback" not in r.stderr


def test_ferryman_scheduler_runs_alone_and_stops_on_sigterm(
    store: Store, db_url: str, tmp_path: Path
) -> None:
    import signal
    import time

    import sqlalchemy as sa
    from tests.cli_support import popen

    from ferryman.store.tables import runs

    deploy(store)
    env = cli_environment(tmp_path / "home", db_url, FERRYMAN_SCHEDULER_POLL_SECONDS="0.5")
    r = ferryman(env, "schedules", "add", "often", "fan", "--every", "1", "--overlap", "allow")
    assert r.returncode == 0, r.stderr
    proc = popen(env, "scheduler")
    try:
        deadline = time.monotonic() + 60
        n = 0
        while n < 3:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "no runs from the scheduler"
            time.sleep(0.2)
            with store.read() as conn:
                n = conn.execute(sa.select(sa.func.count()).select_from(runs)).scalar_one()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "scheduler started" in out and "scheduler stopped" in out

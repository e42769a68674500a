"""Shared by the Slack bot tests: settings with the bot on, users with Slack
ids, the test pipelines registered, signed posts to ``/slack/events``, and a
real ``ferryman server`` process with the bot pointed at the fake Slack."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from tests.api_support import live_server
from tests.cli_support import ROOT, cli_environment, free_port
from tests.slack_fake import FakeSlack, fake_slack, mention, sign

from ferryman.api.app import create_app
from ferryman.dsl.loader import load_pipeline
from ferryman.engine.callback_sender import CallbackSender
from ferryman.engine.worker import Worker
from ferryman.services.auth import Role, create_user, update_user
from ferryman.services.catalog import register
from ferryman.settings import Settings
from ferryman.store.engine import Store
from ferryman.store.tables import runs

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
TOKEN = "xoxb-111-222-SeCrEtBoTtOkEn"
PIPES = Path(__file__).parent / "pipelines" / "compat.py"
BASIC = Path(__file__).parent / "pipelines" / "basic.py"

#: Slack user id -> (ferryman username, role)
PEOPLE = {
    "UOPS": ("olga", Role.OPERATOR),
    "UVIEW": ("victor", Role.VIEWER),
    "UADMIN": ("ada", Role.ADMIN),
}


def bot_settings(settings: Settings, fake: FakeSlack, **kw: Any) -> Settings:
    return settings.updated(
        slack_bot_token=TOKEN,
        slack_signing_secret=SECRET,
        slack_api_url=fake.api_url,
        public_url="https://ferryman.example.com/",
        **kw,
    )


def seed(store: Store) -> None:
    """The users of ``PEOPLE`` and the test pipelines."""
    with store.write() as conn:
        for slack_id, (name, role) in PEOPLE.items():
            create_user(conn, name, None, role, slack_user_id=slack_id)
        create_user(conn, "mail.user@example.com", None, Role.OPERATOR)
        create_user(conn, "boss@example.com", None, Role.ADMIN, slack_user_id="UBOSS")
        gone = create_user(conn, "gone", None, Role.ADMIN, slack_user_id="UGONE")
        update_user(conn, gone["id"], disabled=True)
        for name in ("export_data", "broken_export", "napping", "spilling"):
            register(conn, "default", load_pipeline(f"{PIPES}:{name}"))
        for name in ("fan", "slow", "secretive", "failing"):
            register(conn, "default", load_pipeline(f"{BASIC}:{name}"))


@dataclass
class Poster:
    """Posts signed requests to a server's ``/slack/events``."""

    base: str
    secret: str = SECRET

    def raw(self, body: bytes, headers: dict[str, str], content_type: str) -> httpx.Response:
        return httpx.post(
            f"{self.base}/slack/events",
            content=body,
            headers={"Content-Type": content_type, **headers},
            timeout=30,
        )

    def event(self, payload: dict[str, Any], **headers: str) -> httpx.Response:
        body = json.dumps(payload).encode()
        return self.raw(body, {**sign(self.secret, body), **headers}, "application/json")

    def form(self, body: bytes, **headers: str) -> httpx.Response:
        return self.raw(
            body, {**sign(self.secret, body), **headers}, "application/x-www-form-urlencoded"
        )


@contextmanager
def server_process(
    home: Path, db_url: str, fake: FakeSlack, log: Path, **extra: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A real ``ferryman server`` with the bot on; yields (URL, process)."""
    port = free_port()
    env = cli_environment(
        home,
        db_url,
        FERRYMAN_PORT=str(port),
        FERRYMAN_SLACK_BOT_TOKEN=TOKEN,
        FERRYMAN_SLACK_SIGNING_SECRET=SECRET,
        FERRYMAN_SLACK_API_URL=fake.api_url,
        FERRYMAN_PUBLIC_URL="https://ferryman.example.com/",
        FERRYMAN_CALLBACK_BACKOFF="0.2",
        FERRYMAN_POLL_SECONDS="0.5",
        FERRYMAN_SLACK_UPDATE_SECONDS="0.5",
        PYTHONPATH=str(ROOT),
        **extra,
    )
    with log.open("ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ferryman", "server"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"the server exited: {log.read_text()[-2000:]}"
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()


@dataclass
class Bot:
    """A running server with the bot on, its fake Slack and its store."""

    fake: FakeSlack
    post: Poster
    store: Store
    settings: Settings

    def say(self, text: str, **kw: Any) -> dict[str, Any]:
        """Mention the bot; the answer (the first chat.postMessage in the thread)."""
        ev = mention(text, **kw)
        before = len(self.fake.of("chat.postMessage"))
        r = self.post.event(ev)
        assert r.status_code == 200, r.text
        calls = self.fake.wait_for("chat.postMessage", before + 1)
        answer = calls[before].args
        assert answer["channel"] == ev["event"]["channel"]
        assert answer["thread_ts"] == ev["event"].get("thread_ts", ev["event"]["ts"])
        return answer

    def runs(self) -> list[Any]:
        with self.store.read() as conn:
            return list(conn.execute(sa.select(runs).order_by(runs.c.id)))

    def finish(self) -> None:
        ids = {r.id for r in self.runs() if r.state not in ("succeeded", "failed", "cancelled")}
        if ids:
            Worker(self.store, self.settings).run_until(ids, timeout=60)
        CallbackSender(self.store, self.settings).run_until_idle(20)


@contextmanager
def running_bot(store: Store, settings: Settings) -> Iterator[Bot]:
    """The app (uvicorn on loopback) with the bot on, pointed at a fake Slack
    that knows a few users' e-mail addresses; the users and pipelines seeded."""
    emails = {"UMAIL": "Mail.User@example.com", "UNOBODY": "x@nowhere.org"}
    emails["UEVIL"] = "BOSS@example.com"  # claims the admin's address in another workspace
    with fake_slack(emails) as fake:
        s = bot_settings(settings, fake, callback_backoff=0.1)
        seed(store)
        app = create_app(s, store)
        with live_server(app) as base:
            yield Bot(fake, Poster(base), store, s)
        app.state.slack_bot.close()

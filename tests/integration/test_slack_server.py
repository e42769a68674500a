"""The Slack bot in a real ``ferryman server`` process, against the fake
Slack Web API: a run's completion reaches its thread although the server is
killed (SIGKILL) between the command and the run's end; a failing step's
log is attached with the current upload API; and nothing Slack receives
carries a traceback or a secret. On SQLite and PostgreSQL."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import sqlalchemy as sa
from tests.slack_fake import fake_slack, mention
from tests.slack_support import SECRET, TOKEN, Poster, seed, server_process

from ferryman.settings import Settings
from ferryman.store.engine import Store
from ferryman.store.tables import runs

LEAKED = "pa55-W0rd-never-in-slack"


def _run_of(store: Store, pipeline: str) -> tuple[str, str]:
    with store.read() as conn:
        row = conn.execute(
            sa.select(runs.c.id, runs.c.state).where(runs.c.pipeline == pipeline)
        ).one()
    return row.id, row.state


def test_completion_survives_kill_9(store: Store, settings: Settings, tmp_path: Path) -> None:
    seed(store)
    log = tmp_path / "server.log"
    db = settings.database.url
    with fake_slack() as fake:
        with server_process(settings.home, db, fake, log, FERRYMAN_LEASE_SECONDS="5") as (
            url,
            proc,
        ):
            ev = mention('run napping ```{"seconds": 4}```', user="UOPS")
            assert Poster(url).event(ev).status_code == 200
            fake.wait_for("chat.postMessage", 1)  # the run message
            run_id, state = _run_of(store, "napping")
            assert state in ("queued", "running")
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        time.sleep(1)
        with server_process(settings.home, db, fake, log, FERRYMAN_LEASE_SECONDS="5"):
            # the completion report (the step's process died with its worker:
            # the run ends failed, "worker lost", or succeeded if adopted)
            done = fake.wait_for(
                "chat.postMessage",
                1,
                timeout=90,
                where=lambda c: "*default/napping*" in c.args["text"],
            )
            assert _run_of(store, "napping")[1] in done[0].args["text"]
        assert done[0].args["thread_ts"] == ev["event"]["ts"]
        assert run_id[:12] in done[0].args["text"]
        assert len(fake.of("chat.postMessage")) == 2  # the run message, the completion: once


def test_failing_step_log_attached_without_secrets(
    store: Store, settings: Settings, tmp_path: Path
) -> None:
    seed(store)
    log = tmp_path / "server.log"
    with (
        fake_slack() as fake,
        server_process(
            settings.home, settings.database.url, fake, log, SLACK_TEST_SECRET=LEAKED
        ) as (url, _),
    ):
        ev = mention("run spilling", user="UOPS")
        assert Poster(url).event(ev).status_code == 200
        done = fake.wait_for(
            "chat.postMessage", 1, timeout=90, where=lambda c: "failed" in c.args["text"]
        )[0]
        assert "spill" in done.args["text"] and done.args["thread_ts"] == ev["event"]["ts"]
        fake.wait_for("files.completeUploadExternal", 1, timeout=30)
        (upload,) = fake.of("upload")
        assert b"connecting with" in upload.raw and b"Traceback" in upload.raw
        (get_url,) = fake.of("files.getUploadURLExternal")
        assert get_url.args["filename"].endswith("-spill.log")
        complete = fake.of("files.completeUploadExternal")[0].args
        assert complete["channel_id"] == "C1" and complete["thread_ts"] == ev["event"]["ts"]
        assert fake.of("files.upload") == []  # not the retired API
        # the run message itself was edited in place to the final state
        fake.wait_for("chat.update", 1, timeout=30, where=lambda c: "failed" in c.args["text"])
        # status, logs and the run message show the error too
        Poster(url).event(mention("logs " + _run_of(store, "spilling")[0], user="UVIEW"))
        fake.wait_for("chat.postMessage", 3)
        time.sleep(0.5)
    everything = fake.everything()
    for secret in (LEAKED, SECRET, TOKEN):
        assert secret not in everything
    # messages show the exception, never a traceback (the attached log is the step's own)
    texts = [c.text() for c in fake.calls if c.method in ("chat.postMessage", "chat.update")]
    assert not any("Traceback" in t or 'File "' in t for t in texts)
    assert any("RuntimeError: login refused for password" in t for t in texts)
    assert LEAKED not in log.read_text()

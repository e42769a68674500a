"""The compatibility drop-in, as the old API's clients use it: a client with
``requests`` reading ``response.run_id``, over real HTTP against a live
server; the completion webhook in the old shape, received by a real local
receiver (signed too, checked with ``standardwebhooks``); a dashed pipeline
name. On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from tests.api_support import live_server
from tests.webhook_support import Receiver, verify

from ferryman.api.app import create_app
from ferryman.dsl.loader import load_pipeline
from ferryman.engine.callback_sender import CallbackSender
from ferryman.engine.worker import Worker
from ferryman.services.auth import Role, create_api_token, create_user
from ferryman.services.catalog import register
from ferryman.settings import Settings
from ferryman.store.engine import Store

PIPES = Path(__file__).parent.parent / "pipelines" / "compat.py"


def _token(store: Store) -> str:
    with store.write() as conn:
        user = create_user(conn, "old-client", None, Role.OPERATOR)
        return create_api_token(conn, user["id"], "ci")[1]


def _register(store: Store, *names: str) -> None:
    with store.write() as conn:
        for name in names:
            register(conn, "team-a", load_pipeline(f"{PIPES}:{name}"))


def old_client_run(base: str, token: str, pipeline: str, params: dict[str, object]) -> str:
    """How the old API's clients start a run and read its id."""
    resp = requests.post(
        f"{base}/team-a/pipelines/run/{pipeline}/",
        json=params,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    resp.raise_for_status()
    body = resp.json()
    assert body["status"] == "ok", body
    return str(body["response"]["run_id"])


@pytest.mark.parametrize(("pipeline", "ok"), [("Export-Data", True), ("broken-export", False)])
def test_old_client_and_old_webhook(
    store: Store,
    settings: Settings,
    receivers: Callable[..., Receiver],
    pipeline: str,
    ok: bool,
) -> None:
    s = settings.updated(
        public_url="https://ferryman.example.com/",
        callback_timeout=2.0,
        callback_backoff=0.1,
    )
    _register(store, "export_data", "broken_export")
    token = _token(store)
    rcv = receivers()
    with live_server(create_app(s, store)) as base:
        health = requests.get(f"{base}/", timeout=10)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        run_id = old_client_run(base, token, pipeline, {"webhook_uri": rcv.url})
        bad = requests.post(
            f"{base}/team-a/pipelines/run/{pipeline}/",
            json={"nope": 1},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert bad.status_code == 400 and bad.json()["status"] == "error"
        assert "nope" in bad.json()["response"]["message"]
        unauth = requests.post(f"{base}/team-a/pipelines/run/{pipeline}/", json={}, timeout=30)
        assert unauth.status_code == 401 and "detail" in unauth.json()

    Worker(store, s).run_until({run_id}, timeout=60)
    CallbackSender(store, s).run_until_idle(20)

    (req,) = rcv.requests
    body = verify((s.home / "webhook_secret").read_text().strip(), req)  # signed as well
    got = body["response"]
    assert got["webhook"] is True and got["run_id"] == run_id
    assert got["run_url"] == f"https://ferryman.example.com/runs/{run_id}"
    if ok:
        assert body["status"] == "ok" and got["message"] == "Run completed successfully."
        assert got["error_logs"] == ""
        assert got["uris"] == [
            "gs://bucket/exports/2024-01-01.parquet",
            "https://reports.example.com/r/1",
        ]
    else:
        assert body["status"] == "error" and got["message"] == "Run failed."
        assert "bad data" in got["error_logs"] and "explode" in got["error_logs"]
        assert got["uris"] == []

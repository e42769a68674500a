"""The subscriptions and deliveries API, through the Python client (sync and
async) against a real server on loopback, and the ``ferryman subscriptions``
CLI (local database and ``--server``), on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from standardwebhooks.webhooks import Webhook
from test_subscriptions import fast, finish_runs, subscribe
from tests.webhook_support import Receiver, always

from ferryman.api.app import create_app
from ferryman.client import ApiError, AsyncClient, Client
from ferryman.engine.event_deliverer import EventDeliverer
from ferryman.services import subscriptions as subs
from ferryman.services.auth import Role, create_api_token, create_user
from ferryman.settings import Settings
from ferryman.store.engine import Store

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def live(settings: Settings, store: Store) -> Iterator[str]:
    app = create_app(settings, store)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    while not server.started:
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        t.join(10)


@pytest.fixture
def tokens(store: Store) -> dict[str, str]:
    out = {}
    with store.write() as conn:
        for role in Role:
            user = create_user(conn, f"{role.value}-bot", None, role)
            _, token = create_api_token(conn, user["id"], "tests")
            out[role.value] = token
    return out


def test_roles_secret_once_and_masking(
    store: Store, settings: Settings, tokens: dict[str, str], receivers: Callable[..., Receiver]
) -> None:
    rec = receivers(always(200, b"thanks"))
    with (
        live(settings, store) as url,
        Client(url, token=tokens["admin"]) as admin,
        Client(url, token=tokens["viewer"]) as viewer,
        Client(url, token=tokens["operator"]) as operator,
    ):
        created = admin.create_subscription(
            "ops", rec.url, event_types=["RunFailed"], headers={"Authorization": "Bearer xyz"}
        )
        assert created.secret.startswith("whsec_")
        assert created.headers == {"Authorization": "****"}
        for c in (viewer, operator):
            with pytest.raises(ApiError) as info:
                c.create_subscription("nope", rec.url)
            assert info.value.status == 403
            with pytest.raises(ApiError):
                c.delete_subscription("ops")
        listed = viewer.list_subscriptions().items
        assert [s.name for s in listed] == ["ops"]
        raw = httpx.get(  # every read answer is free of the secret
            f"{url}/subscriptions", headers={"Authorization": f"Bearer {tokens['viewer']}"}
        ).text
        assert created.secret not in raw and "xyz" not in raw

        with pytest.raises(ApiError) as info:
            admin.create_subscription("ops", rec.url)
        assert info.value.status == 409
        with pytest.raises(ApiError) as info:
            admin.create_subscription("bad name", "ftp://x", format="nope")
        assert info.value.status == 422
        assert {d["path"] for d in info.value.details} >= {"name", "url", "format"}

        res = admin.test_subscription("ops", "RunFailed")
        assert (res.ok, res.status, res.response) == (True, 200, "thanks")
        body = Webhook(created.secret).verify(rec.requests[-1].body, rec.requests[-1].headers)
        assert body["type"] == "RunFailed" and body["data"] == {"test": True}
        assert rec.requests[-1].headers["authorization"] == "Bearer xyz"
        with pytest.raises(ApiError) as info:
            viewer.test_subscription("ops")
        assert info.value.status == 403

        off = admin.update_subscription("ops", enabled=False, event_types=["RunSucceeded"])
        assert off.enabled is False and off.event_types == ["RunSucceeded"]
        admin.delete_subscription("ops")
        with pytest.raises(ApiError) as info:
            viewer.get_subscription("ops")
        assert info.value.status == 404


def test_deliveries_list_detail_and_redeliver(
    store: Store, settings: Settings, tokens: dict[str, str], receivers: Callable[..., Receiver]
) -> None:
    s = fast(settings, delivery_max_attempts=2)
    up = False
    rec = receivers(lambda n: (200, {}, b"ok", 0.0) if up else (500, {}, b"boom", 0.0))
    subscribe(store, "flaky", rec.url, event_types=["RunSucceeded"])
    (run_id,) = finish_runs(store, s, "fan", n=2)
    EventDeliverer(store, s).run_until_idle(30)
    with (
        live(s, store) as url,
        Client(url, token=tokens["viewer"]) as viewer,
        Client(url, token=tokens["operator"]) as operator,
    ):
        (dead,) = viewer.list_deliveries(state="dead").items
        assert (dead.run_id, dead.state, dead.attempts, dead.last_status) == (
            run_id, "dead", 2, 500,
        )  # fmt: skip
        detail = viewer.get_delivery(dead.id)
        assert [(a.attempt, a.status, a.response) for a in detail.attempt_log] == [
            (1, 500, None),  # a loopback receiver's error page is not kept
            (2, 500, None),
        ]
        assert viewer.list_deliveries(subscription="flaky", run_id=run_id).items[0].id == dead.id
        with pytest.raises(ApiError) as info:
            viewer.redeliver(dead.id)
        assert info.value.status == 403
        with pytest.raises(ApiError) as info:
            viewer.list_deliveries(state="lost")
        assert info.value.status == 422
        with pytest.raises(ApiError) as info:
            viewer.get_delivery(999999)
        assert info.value.status == 404
        up = True
        assert operator.redeliver(dead.id).queued == 1
        EventDeliverer(store, s).run_until_idle(30)
        assert viewer.get_delivery(dead.id).state == "delivered"
        assert operator.redeliver_dead("flaky").queued == 0

        async def async_side() -> None:
            async with AsyncClient(url, token=tokens["viewer"]) as ac:
                page = await ac.list_deliveries(subscription="flaky")
                assert [d.state for d in page.items] == ["delivered"]
                assert (await ac.get_delivery(dead.id)).attempt_log[-1].status == 200
                assert [x.name for x in (await ac.list_subscriptions()).items] == ["flaky"]

        import asyncio

        asyncio.run(async_side())


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ferryman", "subscriptions", *args],
        env=env, capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip


def test_cli_local_and_remote(
    store: Store,
    settings: Settings,
    tokens: dict[str, str],
    receivers: Callable[..., Receiver],
    db_url: str,
    tmp_path: Path,
) -> None:
    rec = receivers(always(200, b"got it"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERRYMAN_")}
    env.update(FERRYMAN_HOME=str(tmp_path / "cli-home"), FERRYMAN_DATABASE_URL=db_url,
               COLUMNS="250", MY_SECRET="whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY")  # fmt: skip
    r = _cli(env, "add", "local", rec.url, "-e", "RunFailed", "-l", "team=ml", "-H", "X-Key=k1")
    assert r.returncode == 0, r.stderr
    assert "signing secret (shown only now): whsec_" in r.stdout
    secret = r.stdout.split("shown only now): ")[1].split()[0]
    r = _cli(env, "ls")
    assert r.returncode == 0 and "local" in r.stdout and "team=ml" in r.stdout
    assert secret not in r.stdout and "k1" not in r.stdout
    r = _cli(env, "test", "local", "--event", "RunFailed")
    assert r.returncode == 0, r.stderr
    assert "200" in r.stdout and "got it" in r.stdout
    assert Webhook(secret).verify(rec.requests[-1].body, rec.requests[-1].headers)
    r = _cli(env, "add", "bad", "ftp://nowhere", "--format", "nope", "-l", "oops")
    assert r.returncode == 2 and "KEY=VALUE" in r.stderr and "Traceback" not in r.stderr
    r = _cli(env, "add", "bad", "ftp://nowhere", "--format", "nope")
    assert r.returncode == 2 and "url" in r.stderr and "format" in r.stderr
    r = _cli(env, "disable", "local")
    assert r.returncode == 0
    r = _cli(env, "deliveries", "--state", "dead")
    assert r.returncode == 0
    r = _cli(env, "redeliver")
    assert r.returncode == 2
    r = _cli(env, "rm", "local")
    assert r.returncode == 0 and "deleted" in r.stdout
    r = _cli(env, "rm", "local")
    assert r.returncode == 2 and "no subscription" in r.stderr

    with live(settings, store) as url:
        env.update(FERRYMAN_TOKEN=tokens["admin"])
        r = _cli(env, "add", "remote", rec.url, "--secret-env", "MY_SECRET", "--server", url)
        assert r.returncode == 0, r.stderr
        assert "whsec_QUJD" not in r.stdout
        r = _cli(env, "test", "remote", "--server", url)
        assert r.returncode == 0 and "got it" in r.stdout, r.stdout + r.stderr
        Webhook(env["MY_SECRET"]).verify(rec.requests[-1].body, rec.requests[-1].headers)
        r = _cli(env, "ls", "--server", url)
        assert "remote" in r.stdout
        r = _cli(env, "deliveries", "remote", "--server", url)
        assert r.returncode == 0, r.stderr
        env.update(FERRYMAN_TOKEN=tokens["viewer"])
        r = _cli(env, "rm", "remote", "--server", url)
        assert r.returncode == 2 and "403" in r.stderr
        with store.read() as conn:
            assert subs.get_subscription(conn, "remote")["name"] == "remote"

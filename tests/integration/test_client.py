"""The Python client (sync and async) against a real uvicorn server on loopback,
on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from ferryman.api.app import create_app
from ferryman.client import ApiError, AsyncClient, Client
from ferryman.dsl.loader import load_pipeline
from ferryman.engine.worker import Worker
from ferryman.services.auth import Role, create_api_token, create_user
from ferryman.settings import Settings
from ferryman.store.engine import Store

PIPES = Path(__file__).parent.parent / "pipelines" / "basic.py"

TICKS = """
import time

from ferryman import pipeline, step


@step
def ticker(n: int, delay: float) -> int:
    for i in range(n):
        print(f"tick {i}", flush=True)
        time.sleep(delay)
    return n


@pipeline
def ticks(n: int = 5, delay: float = 0.3) -> None:
    ticker(n, delay)
"""

PASSWORD = "correct horse battery"


@pytest.fixture
def server(settings: Settings, store: Store) -> Iterator[str]:
    """The API served by uvicorn in a thread on a free loopback port."""
    with store.write() as conn:
        # alice registers pipelines too: a developer (operator + code)
        create_user(conn, "alice", PASSWORD, Role.DEVELOPER)
        create_user(conn, "victor", PASSWORD, Role.VIEWER)
    app = create_app(settings, store)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_level="warning",
        ws="none",
        lifespan="off",
        http="h11",
        timeout_graceful_shutdown=2,
    )
    srv = uvicorn.Server(config)
    t = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    t.join(10)
    sock.close()


@pytest.fixture
def client(server: str) -> Iterator[Client]:
    with Client(server) as c:
        c.login("alice", PASSWORD)
        yield c


@pytest.fixture
def ticks(tmp_path: Path) -> str:
    path = tmp_path / "ticks.py"
    path.write_text(TICKS)
    return f"{path}:ticks"


def work(store: Store, settings: Settings, *run_ids: str) -> threading.Thread:
    t = threading.Thread(target=lambda: Worker(store, settings).run_until(set(run_ids), timeout=60))
    t.start()
    return t


def test_sync_client(
    client: Client, server: str, store: Store, settings: Settings, ticks: str
) -> None:
    assert client.health()["status"] == "ok"
    assert client.me()["username"] == "alice"
    reg = client.register_pipeline("default", ticks)  # compiled locally from a reference
    assert reg.created and reg.name == "ticks"
    assert not client.register_pipeline("default", load_pipeline(ticks)).created
    fan = client.register_pipeline("default", load_pipeline(f"{PIPES}:fan").model_dump())
    assert fan.created
    assert [p.name for p in client.list_pipelines("default").items] == ["fan", "ticks"]
    detail = client.get_pipeline("default", "ticks")
    assert detail.version == reg.version and detail.steps[0].name == "ticker"
    assert detail.params_schema["properties"]["n"]["type"] == "integer"
    assert [v.version for v in client.list_versions("default", "ticks").items] == [reg.version]

    request: dict[str, Any] = dict(
        labels={"team": "a"},
        webhook_url="https://hooks.example.com/x",
        slack_channel="C1",
        slack_thread="1.2",
        timeout=120,
        idempotency_key="k-1",
    )
    run = client.create_run("default", "ticks", {"n": 4, "delay": 0.25}, **request)
    assert run.created and run.state == "queued" and run.has_webhook and run.timeout == 120
    same = client.create_run("default", "ticks", {"n": 4, "delay": 0.25}, **request)
    assert same.id == run.id and not same.created
    # the key with anything else (here: no labels and no options) is a conflict
    with pytest.raises(ApiError) as exc:
        client.create_run("default", "ticks", {"n": 4, "delay": 0.25}, idempotency_key="k-1")
    assert exc.value.status == 409 and "labels and options" in exc.value.message

    # follow the logs while the step runs: lines arrive before the run ends
    worker = work(store, settings, run.id)
    seen: list[tuple[str, str]] = []
    for line in client.follow_logs(run.id):
        seen.append((line.line, client.get_run(run.id).state.value))
    worker.join(60)
    assert [x for x, _ in seen] == [f"tick {i}" for i in range(4)]
    assert seen[0][1] == "running"
    done = client.wait(run.id, timeout=10, poll=0.1)
    assert done.state == "succeeded" and done.nodes[0].state == "succeeded"
    assert client.outputs(run.id).outputs == {"ticker": 4}
    assert client.outputs(run.id, "ticker").outputs == {"ticker": 4}

    logs = client.logs(run.id, after=0, limit=2)
    assert [x.line for x in logs.items] == ["tick 0", "tick 1"]
    rest = client.logs(run.id, after=logs.next_after)
    assert [x.line for x in rest.items] == ["tick 2", "tick 3"]
    assert rest.run_state == "succeeded"
    assert [x.line for x in client.follow_logs(run.id, after=rest.items[0].id)] == ["tick 3"]
    assert [x.line for x in client.logs(run.id, tail=1).items] == ["tick 3"]
    evs = client.events(run.id)
    assert evs.items[0].type == "RunQueued" and evs.items[-1].type == "RunSucceeded"
    assert client.events(run.id, after=evs.next_after).items == []

    # listing, with filters and every page
    others = [client.create_run("default", "fan", {"n": 1}, labels={"i": str(i)}) for i in range(5)]
    compat = client.create_run_compat(
        "default", "fan", {"n": 2}, webhook_uri="https://hooks.example.com/y"
    )
    assert compat.status == "ok" and compat.response.run_url.endswith(compat.id)
    got = client.get_run(compat.id)
    assert got.has_webhook and got.params == {"n": 2, "shards": 3}
    newest = [compat.id, *[o.id for o in reversed(others)], run.id]
    assert [r.id for r in client.iter_runs(page_size=2)] == newest
    page = client.list_runs(limit=3)
    assert len(page.items) == 3 and page.next_cursor
    assert [r.id for r in client.list_runs(limit=3, cursor=page.next_cursor).items] == newest[3:6]
    assert [r.id for r in client.list_runs(state="succeeded").items] == [run.id]
    assert [r.id for r in client.list_runs(state=["succeeded", "failed"]).items] == [run.id]
    assert [r.id for r in client.list_runs(labels={"i": "3"}).items] == [others[3].id]
    assert [r.id for r in client.list_runs(labels=["team:a"]).items] == [run.id]
    assert [r.id for r in client.list_runs(pipeline="fan", namespace="default").items] == [
        compat.id, *[o.id for o in reversed(others)],
    ]  # fmt: skip
    window = client.list_runs(
        created_after=others[1].created_at, created_before=others[3].created_at
    )
    assert [r.id for r in window.items] == [others[2].id, others[1].id]
    naive = others[4].created_at.astimezone(dt.UTC).replace(tzinfo=None)
    assert [r.id for r in client.list_runs(created_after=naive).items] == [compat.id, others[4].id]
    assert client.count_runs().counts == {"succeeded": 1, "queued": 6}

    # cancel, re-run and their errors
    cancelled = client.cancel_run(others[0].id)
    assert cancelled.state == "cancelled"
    with pytest.raises(ApiError) as exc:
        client.cancel_run(others[0].id)
    assert (exc.value.status, exc.value.code) == (409, "conflict")
    again = client.rerun(others[0].id[:20])
    assert again.created and again.rerun_of == others[0].id
    with pytest.raises(ApiError) as exc:
        client.rerun(run.id)
    assert exc.value.status == 409

    # errors carry the API's code, message and details
    with pytest.raises(ApiError) as exc:
        client.create_run("default", "fan", {"n": "many", "zzz": 1})
    err = exc.value
    assert (err.status, err.code) == (422, "invalid_params")
    assert sorted(d["path"] for d in err.details) == ["n", "zzz"]
    with pytest.raises(ApiError) as exc:
        client.get_run("0" * 32)
    assert (exc.value.status, exc.value.code) == (404, "not_found")
    with pytest.raises(ApiError) as exc:
        client.create_run("default", "nope")
    assert "fan, ticks" in exc.value.message
    with pytest.raises(ApiError) as exc:
        client.list_runs(cursor="garbage!")
    assert exc.value.status == 422
    with pytest.raises(ApiError) as exc:
        list(client.follow_logs("f" * 32))
    assert exc.value.status == 404


def test_auth_through_the_client(server: str, store: Store) -> None:
    with Client(server) as anon:
        with pytest.raises(ApiError) as exc:
            anon.list_runs()
        assert (exc.value.status, exc.value.code) == (401, "unauthorized")
        with pytest.raises(ApiError) as exc:
            anon.login("alice", "wrong password")
        assert exc.value.status == 401
        anon.login("victor", PASSWORD)
        assert anon.list_runs().items == []
        with pytest.raises(ApiError) as exc:
            anon.register_pipeline("default", f"{PIPES}:fan")
        assert exc.value.status == 403
    with store.write() as conn:
        bot = create_user(conn, "ci-bot", None, Role.DEVELOPER)
        _, token = create_api_token(conn, bot["id"], "ci")
        runner = create_user(conn, "ci-runner", None, Role.OPERATOR)
        _, runner_token = create_api_token(conn, runner["id"], "ci")
    with Client(server, token) as c:
        assert c.register_pipeline("default", f"{PIPES}:fan").created
        assert c.create_run("default", "fan").trigger == {"kind": "api", "user": "ci-bot"}
    with Client(server, runner_token) as c:  # operators run what developers registered
        with pytest.raises(ApiError) as exc:
            c.register_pipeline("default", f"{PIPES}:fan")
        assert (exc.value.status, exc.value.code) == (403, "forbidden")
        assert c.create_run("default", "fan").trigger == {"kind": "api", "user": "ci-runner"}


def test_unreachable_server_is_an_api_error() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with Client(f"http://127.0.0.1:{port}", timeout=2) as c, pytest.raises(ApiError) as exc:
        c.health()
    assert (exc.value.status, exc.value.code) == (0, "connection_error")


def test_parallel_creates_with_one_key_over_http(server: str, client: Client) -> None:
    client.register_pipeline("default", f"{PIPES}:fan")
    token = client.token
    barrier = threading.Barrier(50)

    def one(_: int) -> tuple[str, bool]:
        with Client(server, token) as c:
            barrier.wait()
            r = c.create_run("default", "fan", {"n": 3}, idempotency_key="one-key")
            return r.id, r.created

    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(one, range(50)))
    assert len({rid for rid, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert len(client.list_runs(limit=200).items) == 1


async def test_async_client(server: str, store: Store, settings: Settings, ticks: str) -> None:
    async with AsyncClient(server) as c:
        assert (await c.health())["status"] == "ok"
        await c.login("alice", PASSWORD)
        reg = await c.register_pipeline("team", ticks)
        assert reg.created
        assert (await c.get_pipeline("team", "ticks")).version == reg.version
        assert [p.name for p in (await c.list_pipelines("team")).items] == ["ticks"]
        assert len((await c.list_versions("team", "ticks")).items) == 1
        run = await c.create_run("team", "ticks", {"n": 3, "delay": 0.2}, labels={"x": "1"})
        assert run.created and run.labels == {"x": "1"}
        worker = await asyncio.to_thread(work, store, settings, run.id)
        lines = [line.line async for line in c.follow_logs(run.id)]
        await asyncio.to_thread(worker.join, 60)
        assert lines == ["tick 0", "tick 1", "tick 2"]
        done = await c.wait(run.id, timeout=10, poll=0.1)
        assert done.state == "succeeded"
        assert (await c.outputs(run.id)).outputs == {"ticker": 3}
        assert (await c.outputs(run.id, step="ticker")).outputs == {"ticker": 3}
        assert [x.line for x in (await c.logs(run.id, tail=2)).items] == ["tick 1", "tick 2"]
        assert (await c.events(run.id)).items[-1].type == "RunSucceeded"
        compat = await c.create_run_compat("team", "ticks", {"n": 1}, idempotency_key="c")
        assert (await c.create_run_compat("team", "ticks", {"n": 1}, idempotency_key="c")).id == (
            compat.id
        )
        ids = [r.id async for r in c.iter_runs(page_size=1)]
        assert ids == [compat.id, run.id]
        assert (await c.list_runs(labels={"x": "1"})).items[0].id == run.id
        assert (await c.count_runs(namespace="team")).total == 2
        assert (await c.get_run(run.id)).nodes[0].name == "ticker"
        assert (await c.cancel_run(compat.id)).state == "cancelled"
        with pytest.raises(ApiError) as exc:
            await c.cancel_run(compat.id)
        assert exc.value.status == 409
        again = await c.rerun(compat.id)
        assert again.rerun_of == compat.id
        with pytest.raises(ApiError) as exc:
            await c.create_run("team", "ticks", {"n": "x"})
        assert exc.value.details == [{"path": "n", "reason": exc.value.details[0]["reason"]}]
        with pytest.raises(ApiError) as exc:
            [x async for x in c.follow_logs("0" * 32)]
        assert exc.value.status == 404


# -- the log stream's reconnection, with a scripted server -------------------------


def _sse_server(script: list[bytes], seen: list[dict[str, str]]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(dict(request.headers))
        body = script.pop(0)
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    return httpx.MockTransport(handler)


def _line(i: int) -> bytes:
    t = "2024-01-01T00:00:00Z"
    data = f'{{"id":{i},"node":"s","attempt":1,"stream":"stdout","line":"l{i}","time":"{t}"}}'
    return f"id: {i}\ndata: {data}\n\n".encode()


def test_follow_logs_resumes_after_a_dropped_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "sleep", lambda _s: None)
    seen: list[dict[str, Any]] = []
    script = [
        b": hello\nretry: 2000\n\n" + _line(1) + _line(2),  # ends without `event: end`
        _line(3) + b": keep-alive\n\n" + b'event: end\ndata: {"state":"succeeded"}\n\n',
    ]
    with Client("http://x", "tok", transport=_sse_server(script, seen)) as c:
        lines = [x.line for x in c.follow_logs("a" * 32)]
    assert lines == ["l1", "l2", "l3"]
    assert "last-event-id" not in seen[0] and seen[1]["last-event-id"] == "2"
    assert seen[1]["authorization"] == "Bearer tok"

    with (
        Client("http://x", transport=_sse_server([_line(1)], [])) as c,
        pytest.raises(ApiError) as exc,
    ):
        list(c.follow_logs("a" * 32, reconnect=False))
    assert exc.value.code == "connection_error"


async def test_async_follow_logs_resumes(monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_sleep(_s: float) -> None:
        return None

    monkeypatch.setattr(asyncio, "sleep", no_sleep)
    seen: list[dict[str, Any]] = []
    script = [_line(5), _line(6) + b"event: end\ndata: {}\n\n"]

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(dict(request.headers))
        return httpx.Response(200, content=script.pop(0))

    async with AsyncClient("http://x", transport=httpx.MockTransport(handler)) as c:
        lines = [x.id async for x in c.follow_logs("a" * 32, after=4)]
    assert lines == [5, 6]
    assert seen[0]["last-event-id"] == "4" and seen[1]["last-event-id"] == "5"


def test_non_json_errors_become_api_errors() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html>bad gateway</html>")

    with (
        Client("http://x", transport=httpx.MockTransport(handler)) as c,
        pytest.raises(ApiError) as exc,
    ):
        c.get_run("a" * 32)
    assert (exc.value.status, exc.value.code) == (502, "bad_gateway")
    assert "bad gateway" in exc.value.message


def test_closing_a_log_stream_stops_the_server_side(
    client: Client, ticks: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ferryman.api.routes import runs as runs_routes

    polls: list[float] = []
    real_poll = runs_routes._poll

    def counting_poll(*args: Any) -> Any:
        polls.append(time.monotonic())
        return real_poll(*args)

    monkeypatch.setattr(runs_routes, "_poll", counting_poll)
    monkeypatch.setattr(runs_routes, "POLL_SECONDS", 0.05)
    client.register_pipeline("default", ticks)
    run = client.create_run("default", "ticks")  # no worker: it stays queued

    with client._http.stream(
        "GET", f"/runs/{run.id}/logs/stream", headers=client.auth_headers()
    ) as resp:
        assert resp.status_code == 200
        lines = resp.iter_lines()  # (kept: a dropped iterator closes the connection)
        next(lines)  # the stream is open ...
        deadline = time.monotonic() + 10
        while len(polls) < 3:  # ... and the server polls
            assert time.monotonic() < deadline
            time.sleep(0.02)
    # the client left: the server notices within a poll or two
    time.sleep(0.5)
    settled = len(polls)
    time.sleep(0.5)
    assert len(polls) == settled, "the server kept polling for a client that left"


def test_users_and_tokens_through_the_client(server: str, store: Store) -> None:
    with store.write() as conn:
        create_user(conn, "root", PASSWORD, Role.ADMIN)
    with Client(server) as admin:
        admin.login("root", PASSWORD)
        bob = admin.create_user("bob", "viewer", password="bob's password")
        assert (bob.username, bob.role, bob.disabled) == ("bob", "viewer", False)
        assert "bob" in [u.username for u in admin.list_users()]
        assert admin.get_user(bob.id).username == "bob"
        with pytest.raises(ApiError) as exc:
            admin.create_user("bob", "viewer", password="another password")
        assert exc.value.status == 409
        with pytest.raises(ValueError, match="role"):
            admin.create_user("carol", "superuser")  # checked before any request
        promoted = admin.update_user(bob.id, role="operator")
        assert promoted.role == "operator" and promoted.slack_user_id is None
        made = admin.create_token("ci", user_id=bob.id, expires_in_days=7)
        assert made.token.startswith("fm_") and made.username == "bob"
        with Client(server, made.token) as bot:
            assert bot.me()["username"] == "bob"
            assert [t.id for t in bot.list_tokens()] == [made.id]
            with pytest.raises(ApiError) as exc:
                bot.list_users()
            assert exc.value.status == 403
            assert bot.revoke_token(made.id).revoked
            with pytest.raises(ApiError) as exc:
                bot.me()
            assert exc.value.status == 401
        assert admin.get_token(made.id).revoked
        admin.delete_user(bob.id)
        with pytest.raises(ApiError) as exc:
            admin.get_user(bob.id)
        assert exc.value.status == 404


async def test_async_users_and_tokens(server: str, store: Store) -> None:
    with store.write() as conn:
        create_user(conn, "root", PASSWORD, Role.ADMIN)
    async with AsyncClient(server) as admin:
        await admin.login("root", PASSWORD)
        dora = await admin.create_user("dora", "operator")
        assert dora.role == "operator"
        assert (await admin.update_user(dora.id, disabled=True)).disabled
        tok = await admin.create_token("robot")
        assert tok.username == "root"
        assert tok.id in [t.id for t in await admin.list_tokens()]
        assert (await admin.revoke_token(tok.id)).revoked
        await admin.delete_user(dora.id)
        assert "dora" not in [u.username for u in await admin.list_users()]

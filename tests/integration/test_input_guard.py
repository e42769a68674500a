"""Values no database can keep are refused at the edge (issue 11, item 4).

One request with a lone surrogate in its params (``"\\ud800"`` in JSON) used
to be stored on SQLite, answer 500, and make every later ``GET /runs`` that
listed the run answer 500 too; PostgreSQL answered 500 on insert. Numbers
that are not finite (``1e400``, ``Infinity``, ``NaN``) and NUL characters are
just as unstorable. Now every JSON body of every route, every query string,
path and header is checked once, before routing: 422 with the error shape
and the path of the bad value. Real HTTP, SQLite and PostgreSQL.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI
from tests.api_support import assert_error, bearer, live_server

from ferryman.api.app import create_app
from ferryman.api.input_guard import InputGuard
from ferryman.services.auth import Role, create_api_token, create_user
from ferryman.settings import Settings
from ferryman.store.engine import Store

SPEC = {
    "name": "notes",
    "params": [{"name": "note", "type": "string", "required": False}],
    "steps": [{"name": "a", "function": {"module": "os.path", "qualname": "join"}}],
}
RUNS = "/namespaces/default/pipelines/notes/runs"


@pytest.fixture
def app(settings: Settings, store: Store) -> FastAPI:
    return create_app(settings, store)


@pytest.fixture(params=["h11", "httptools"])
def client(request: pytest.FixtureRequest, app: FastAPI) -> Iterator[httpx.Client]:
    with live_server(app, http=request.param) as url, httpx.Client(base_url=url) as c:
        yield c


@pytest.fixture
def admin(store: Store) -> dict[str, str]:
    with store.write() as conn:
        user = create_user(conn, "root-bot", None, Role.ADMIN)
        _, token = create_api_token(conn, user["id"], "tests")
    return bearer(token)


@pytest.fixture
def pipeline(client: httpx.Client, admin: dict[str, str]) -> None:
    r = client.post("/namespaces/default/pipelines", json=SPEC, headers=admin)
    assert r.status_code in (200, 201), r.text


def post_raw(client: httpx.Client, url: str, body: bytes, headers: dict[str, str]) -> Any:
    return client.post(url, content=body, headers={**headers, "Content-Type": "application/json"})


def test_a_lone_surrogate_in_params_never_breaks_the_run_list(
    client: httpx.Client, admin: dict[str, str], pipeline: None
) -> None:
    r = post_raw(client, RUNS, b'{"params": {"note": "\\ud800"}}', admin)
    err = assert_error(r, 422, "invalid")
    assert err["details"][0]["path"] == "params.note", err
    assert "surrogate" in err["details"][0]["reason"]
    r = client.get("/runs", headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["items"] == []
    # A character outside the BMP, written as a (valid) surrogate pair, is fine.
    r = post_raw(client, RUNS, b'{"params": {"note": "ok \\ud83d\\ude00"}}', admin)
    assert r.status_code == 201, r.text
    run = client.get(f"/runs/{r.json()['id']}", headers=admin).json()
    assert run["params"]["note"] == "ok \U0001f600"
    assert client.get("/runs", headers=admin).status_code == 200


# (raw JSON body, path of the bad value in the error)
BAD_BODIES = [
    (b'{"name": "\\ud800"}', "name", "surrogate"),
    (b'{"a": {"b": ["ok", "x\\udfffy"]}}', "a.b.1", "surrogate"),
    (b'{"\\udc00": 1}', "\\udc00", "surrogate"),
    (b'{"name": "nul\\u0000byte"}', "name", "NUL"),
    (b'{"n": NaN}', "n", "finite"),
    (b'{"n": Infinity}', "n", "finite"),
    (b'{"n": -Infinity}', "n", "finite"),
    (b'{"n": 1e400}', "n", "finite"),
    (b'{"deep": [[{"n": -1E+999}]]}', "deep.0.0.n", "finite"),
    (b"[1, 2, 1e400]", "2", "finite"),
]


def json_operations(app: FastAPI) -> list[tuple[str, str]]:
    """(METHOD, path) of every operation that takes a JSON body, from the schema."""
    found = []
    for path, item in app.openapi()["paths"].items():
        for method, op in item.items():
            content = op.get("requestBody", {}).get("content", {})
            if "application/json" in content:
                found.append((method.upper(), re.sub(r"{[^}]+}", "1", path)))
    return found


def test_every_json_body_refuses_unstorable_values(
    app: FastAPI, client: httpx.Client, admin: dict[str, str]
) -> None:
    operations = json_operations(app)
    assert len(operations) >= 6, operations  # pipelines, runs, users, tokens, subscriptions…
    wrong = []
    for method, url in operations:
        for body, path, reason in BAD_BODIES:
            r = client.request(
                method, url, content=body, headers={**admin, "Content-Type": "application/json"}
            )
            try:
                err = assert_error(r, 422, "invalid")
                assert err["details"] == [{"path": path, "reason": err["details"][0]["reason"]}]
                assert reason in err["details"][0]["reason"]
            except (AssertionError, KeyError, ValueError) as exc:
                wrong.append(f"{method} {url} {body!r}: {r.status_code} {r.text[:200]} ({exc})")
    assert not wrong, "\n".join(wrong)


def test_bodies_without_a_json_content_type_are_checked_too(
    client: httpx.Client, admin: dict[str, str], pipeline: None
) -> None:
    """FastAPI reads a body without Content-Type as JSON: so does the guard."""
    r = client.post(RUNS, content=b'{"params": {"note": "\\ud800"}}', headers=admin)
    assert_error(r, 422, "invalid")
    for content_type in ("application/json; charset=utf-8", "application/merge-patch+json"):
        r = client.post(RUNS, content=b'{"params": {"n": NaN}}',
                        headers={**admin, "Content-Type": content_type})  # fmt: skip
        assert_error(r, 422, "invalid")


def test_nul_in_query_and_path_is_refused(
    client: httpx.Client, admin: dict[str, str], pipeline: None
) -> None:
    err = assert_error(client.get("/runs?namespace=a%00b", headers=admin), 422, "invalid")
    assert err["details"][0]["path"] == "query.namespace"
    err = assert_error(client.get("/runs?na%00me=x", headers=admin), 422, "invalid")
    assert err["details"][0]["path"].startswith("query.")
    err = assert_error(client.get("/runs/ab%00cd", headers=admin), 422, "invalid")
    assert err["details"][0]["path"] == "path"
    err = assert_error(client.get("/namespaces/de%00fault/pipelines", headers=admin), 422)
    assert err["details"][0]["path"] == "path"
    assert client.get("/runs?namespace=default", headers=admin).status_code == 200


def raw_request(base: str, head: bytes) -> bytes:
    """Send a hand-written request (httpx refuses to send NUL in a header)."""
    parts = urlsplit(base)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(head)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_nul_in_a_header_is_refused(client: httpx.Client, admin: dict[str, str]) -> None:
    auth = admin["Authorization"].encode()
    head = (
        b"GET /runs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Authorization: " + auth + b"\r\nX-Trace: a\x00b\r\n\r\n"
    )
    answer = raw_request(str(client.base_url), head)
    status = int(answer.split(b" ", 2)[1])
    # The HTTP parser may refuse it first (400); if it lets it through, the guard does.
    assert status in (400, 422), answer[:300]
    if status == 422:
        assert b'"path":"header.x-trace"' in answer, answer


async def test_the_guard_refuses_nul_in_headers_itself() -> None:
    """Both HTTP parsers refuse a NUL in a header first (400, above); the guard
    does not rely on it."""
    called = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        called.append(scope)

    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {
        "type": "http", "method": "GET", "path": "/runs", "query_string": b"",
        "headers": [(b"host", b"x"), (b"x-trace", b"a\x00b")],
    }  # fmt: skip
    await InputGuard(app)(scope, receive, send)
    assert not called
    assert sent[0]["status"] == 422
    assert b'"path":"header.x-trace"' in sent[1]["body"]


def test_valid_bodies_still_pass(client: httpx.Client, admin: dict[str, str]) -> None:
    r = client.post("/users", json={"username": "zoë", "role": "viewer"}, headers=admin)
    assert_error(r, 422)  # an invalid username, said by the route (not the guard)
    r = client.post("/users", json={"username": "zoe", "role": "viewer"}, headers=admin)
    assert r.status_code == 201, r.text
    r = client.post("/tokens", json={"name": "ünïcødé \U0001f680 bot"}, headers=admin)
    assert r.status_code == 201, r.text

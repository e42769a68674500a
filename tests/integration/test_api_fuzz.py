"""Property-based fuzzing of the REST API with Schemathesis.

The schema is read from the running server (``/openapi.json`` over loopback
HTTP), so every route anyone adds is fuzzed without touching this file. Each
operation gets a bounded, derandomized number of generated requests (plus
Schemathesis' explicit examples and boundary "coverage" cases), sent as an
admin so that they get past authentication and into the handlers. Every
answer must be:

- never a 5xx (``not_a_server_error``);
- for a 4xx, the API's error shape ``{"error": {"code", "message", "details"}}``;
- conform to the documented response schema and content type.

Runs on SQLite and on PostgreSQL (which refuses inputs SQLite takes, such as
NUL bytes in text or integers past 32 bits); each takes about as long.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
import uvicorn
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)

from ferryman.api.app import create_app
from ferryman.errors import NotFound
from ferryman.home_secrets import jwt_secret
from ferryman.services import auth
from ferryman.services.auth import Role
from ferryman.settings import Settings
from ferryman.store.engine import Store
from ferryman.store.tables import metadata

MAX_EXAMPLES = 25
# A never-ending answer cannot be fuzzed request/response style: the log stream
# of a run that is not over stays open (its own tests drive it).
STREAMS = r"/logs/stream$"


def _schema_of_the_app() -> dict[str, Any]:
    """The app's OpenAPI document, built at collection time so that each
    operation becomes its own test (``test_fuzz_api[POST /users]``). No database
    is touched; ``test_the_served_schema_is_the_fuzzed_one`` checks that the
    running server serves the very same document."""
    store = Store("sqlite://")
    app = create_app(Settings(database_url="sqlite://", auto_migrate=False), store)
    document = app.openapi()
    store.dispose()
    return document


SCHEMA = _schema_of_the_app()
schema = schemathesis.openapi.from_dict(SCHEMA).exclude(path_regex=STREAMS)
schema.config.generation.update(max_examples=MAX_EXAMPLES, deterministic=True)


@contextmanager
def live_server(app: FastAPI) -> Iterator[str]:
    """Serve ``app`` over real HTTP on a free loopback port; yields its base URL."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, lifespan="off", ws="none", http="h11", log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="api-under-fuzz", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.005)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Store, Settings]]:
    """One server per database backend, shared by every fuzzed operation."""
    home = tmp_path_factory.mktemp("fuzz")
    if request.param == "sqlite":
        url = f"sqlite:///{home}/ferryman.db"
    else:
        url = request.getfixturevalue("pg_database")  # skips (or fails in CI) without one
        _empty(url)
    cheap = PasswordHash((Argon2Hasher(time_cost=1, memory_cost=1024, parallelism=1),))
    config = Settings(home=home, database_url=url)
    store = Store.from_settings(config)
    with pytest.MonkeyPatch.context() as mp, live_server(create_app(config, store)) as base:
        # Cheap Argon2 parameters: the production ones cost ~0.5 s a hash, by design.
        mp.setattr(auth, "_HASHER", cheap)
        yield base, store, config
    store.dispose()


def _empty(url: str) -> None:
    """Start from empty tables (the PostgreSQL database is shared by the session)."""
    store = Store(url)
    names = ", ".join(t.name for t in reversed(metadata.sorted_tables))
    with store.engine.begin() as conn:
        conn.exec_driver_sql(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
    store.dispose()


class AdminCredentials:
    """An admin's bearer token for every generated request.

    The fuzzer is an admin, so it may demote, disable or delete its own user
    (once it has created another admin). Before each request the user is put
    back, or a new one made, so that every request gets past authentication.
    """

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.secret = jwt_secret(settings)
        self.user_id: int | None = None
        self.made = 0

    def headers(self) -> dict[str, str]:
        with self.store.write() as conn:
            user = None
            if self.user_id is not None:
                try:
                    user = auth.get_user(conn, self.user_id)
                except NotFound:
                    user = None
            if user is None:
                self.made += 1
                user = auth.create_user(conn, f"fuzzer-{self.made}", None, Role.ADMIN)
            elif user["role"] != Role.ADMIN or user["disabled"]:
                user = auth.update_user(conn, user["id"], role=Role.ADMIN, disabled=False)
            who = auth.principal_for(conn, user["id"])
        self.user_id = user["id"]
        token, _ = auth.issue_jwt(who, self.secret, 3600)
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def admin(server: tuple[str, Store, Settings]) -> AdminCredentials:
    _, store, settings = server
    return AdminCredentials(store, settings)


def error_shape(ctx: Any, response: Any, case: Any) -> None:
    """Every 4xx carries ``{"error": {"code", "message", "details"}}`` and no traceback."""
    if not 400 <= response.status_code < 500:
        return
    body = response.json()
    compat = "compatibility" in (case.operation.definition.raw.get("tags") or ())
    if compat and "error" not in body:  # (edge protections answer before any route)
        # the replaced API's shapes, which its clients parse (docs/migrating-from-kfp-bot.md)
        assert "Traceback" not in response.text
        if response.status_code in (401, 403):
            assert isinstance(body.get("detail"), str) and body["detail"], body
        else:
            assert body["status"] == "error" and body["response"]["message"], body
        return
    assert isinstance(body, dict) and list(body) == ["error"], (
        f"{response.status_code} without the error shape: {response.text[:300]}"
    )
    err = body["error"]
    assert isinstance(err, dict) and set(err) == {"code", "message", "details"}, err
    assert isinstance(err["code"], str) and err["code"], err
    assert isinstance(err["message"], str) and err["message"], err
    assert "Traceback" not in response.text
    if response.status_code == 401:
        assert response.headers.get("www-authenticate"), "401 without WWW-Authenticate"


CHECKS = [not_a_server_error, error_shape, response_schema_conformance, content_type_conformance]


def test_the_served_schema_is_the_fuzzed_one(server: tuple[str, Store, Settings]) -> None:
    url, _, _ = server
    served = httpx.get(f"{url}/openapi.json", timeout=30).json()
    assert served == SCHEMA
    assert len(list(schema.get_all_operations())) >= 9


@schema.parametrize()
@hypothesis.settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure prints its curl
    suppress_health_check=list(HealthCheck),
)
def test_fuzz_api(case: Any, server: tuple[str, Store, Settings], admin: AdminCredentials) -> None:
    url, _, _ = server
    headers = admin.headers()
    response = case.call(base_url=url, headers=headers, timeout=30)
    case.validate_response(response, checks=CHECKS, headers=headers)

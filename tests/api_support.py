"""Shared by the API security tests: the app served over real HTTP on
loopback, cheap password hashing, and the error-shape assertion."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from httpx import Response
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from ferryman.services import auth

#: Argon2 parameters cheap enough for tests (the production ones cost ~0.3 s a hash).
CHEAP_HASHER = PasswordHash((Argon2Hasher(time_cost=1, memory_cost=1024, parallelism=1),))


@pytest.fixture
def fast_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cheap Argon2 for the test (use it with ``pytest.mark.usefixtures``)."""
    monkeypatch.setattr(auth, "_HASHER", CHEAP_HASHER)


@contextmanager
def live_server(app: FastAPI, **config: Any) -> Iterator[str]:
    """Serve ``app`` over real HTTP on a free loopback port; yields its base URL.

    uvicorn's proxy-header handling is on (as in ``ferryman server``) and trusts
    loopback, so a test may speak for other client addresses with
    ``X-Forwarded-For``."""
    options: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "lifespan": "off",
        "ws": "none",
        "http": "h11",
        "log_level": "warning",
        "forwarded_allow_ips": "127.0.0.1",
    }
    options.update(config)
    server = uvicorn.Server(uvicorn.Config(app, **options))
    thread = threading.Thread(target=server.run, name="api-under-test", daemon=True)
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


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_error(r: Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The response has ``status`` and the API's error shape (and no traceback)."""
    assert r.status_code == status, f"{r.status_code} != {status}: {r.text}"
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert list(body) == ["error"], body
    err = body["error"]
    assert set(err) == {"code", "message", "details"}, err
    assert isinstance(err["code"], str) and err["code"]
    assert isinstance(err["message"], str) and err["message"]
    assert "Traceback" not in r.text
    if code is not None:
        assert err["code"] == code, err
    return dict(err)

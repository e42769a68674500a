"""A database outage answers 503 with ``Retry-After``, not 500 with
tracebacks in the log (issue 11, item 10).

The server reaches PostgreSQL through a loopback TCP proxy that the test
cuts: every request that needs the database then answers 503 with the error
shape and ``Retry-After``, and the log gets one line per failure (no
traceback). When the proxy comes back, so does the API.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from tests.api_support import assert_error, bearer, live_server
from tests.tcp_proxy import TcpProxy

from ferryman.api.app import create_app
from ferryman.engine.supervisor import Supervisor
from ferryman.services.auth import Role, create_api_token, create_user
from ferryman.settings import Settings
from ferryman.store.engine import Store


@pytest.fixture
def proxied(pg_database: str, tmp_path: Path) -> Iterator[tuple[TcpProxy, Settings, Store]]:
    target = sa.make_url(pg_database)
    with TcpProxy(target.host or "127.0.0.1", target.port or 5432) as proxy:
        url = target.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        settings = Settings(home=tmp_path / "home", database_url=url)
        store = Store.from_settings(settings)
        try:
            yield proxy, settings, store
        finally:
            store.dispose()


def test_an_outage_answers_503_and_logs_one_line_per_failure(
    proxied: tuple[TcpProxy, Settings, Store], caplog: pytest.LogCaptureFixture
) -> None:
    proxy, settings, store = proxied
    with store.write() as conn:
        user = create_user(conn, "outage-bot", None, Role.ADMIN)
        _, token = create_api_token(conn, user["id"], "tests")
    auth = bearer(token)
    app = create_app(settings, store)
    # log_config=None: uvicorn's own loggers propagate too, so nothing escapes caplog
    with live_server(app, log_config=None) as url, httpx.Client(base_url=url, timeout=30) as c:
        assert c.get("/runs", headers=auth).status_code == 200
        proxy.cut()
        caplog.clear()
        caplog.set_level(logging.INFO)
        calls = [
            ("GET", "/runs", None),
            ("GET", "/users", None),
            ("POST", "/namespaces/default/pipelines", {"name": "x", "steps": []}),
            ("GET", "/runs/0123456789abcdef0123456789abcdef", None),
        ]
        for method, path, body in calls:
            r = c.request(method, path, json=body, headers=auth)
            err = assert_error(r, 503, "unavailable")
            assert "database" in err["message"]
            assert 1 <= int(r.headers["retry-after"]) <= 60
        assert_error(c.get("/ready"), 503, "unavailable")
        assert c.get("/health").status_code == 200  # alive, just not ready

        problems = [r for r in caplog.records if r.levelno >= logging.WARNING]
        text = caplog.text
        assert len(problems) == len(calls), [r.getMessage() for r in problems]
        for record in problems:
            assert record.exc_info is None and record.exc_text is None
            assert "\n" not in record.getMessage()
        assert "Traceback" not in text

        proxy.restore()
        deadline = time.monotonic() + 20
        while (status := c.get("/runs", headers=auth).status_code) != 200:
            assert status == 503 and time.monotonic() < deadline
            time.sleep(0.2)


def test_loops_log_an_outage_in_one_line(caplog: pytest.LogCaptureFixture) -> None:
    """The server's loops are rebuilt after a failure; an outage is one line
    each time, not a traceback."""
    attempts = threading.Event()
    outage = sa.exc.OperationalError("SELECT 1", {}, Exception("connection refused"))

    def factory() -> object:
        attempts.set()
        raise outage

    loop = Supervisor("worker", factory)  # type: ignore[arg-type]
    caplog.set_level(logging.INFO)
    loop.start()
    assert attempts.wait(5)
    time.sleep(0.2)
    loop.stop()
    assert loop.join(5)
    records = [r for r in caplog.records if r.name == "ferryman.engine.supervisor"]
    assert records, "the failure was not logged"
    for record in records:
        assert record.exc_info is None, record.getMessage()
        assert "database unavailable" in record.getMessage()

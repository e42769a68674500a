"""Acceptance: event deliveries survive ``kill -9`` of a real ``ferryman server``.

A subscription is made through the REST API (its secret is shown once), two
runs end while the subscriber is down, so their deliveries fail and wait;
the server is killed with SIGKILL; after a restart the receiver comes up and
every event of both runs arrives, in order per run, signed (verified with
the ``standardwebhooks`` package), duplicates (if any) with the same ids.
"""

from __future__ import annotations

import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from standardwebhooks.webhooks import Webhook
from test_server_restart import Receiver, Server, free_port, http, server_env, wait_for

from ferryman.store.engine import Store
from ferryman.store.tables import deliveries, events, metadata

__all__ = ["server_env"]  # the fixture, shared with test_server_restart

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux process tools"),
]

ADMIN_PASSWORD = "acceptance-admin-pw"
PIPELINE = textwrap.dedent(
    """
    from ferryman import pipeline, step


    @step(infrastructure="inline")
    def one() -> int:
        return 1


    @step(infrastructure="inline")
    def two(x: int) -> int:
        return x + 1


    @pipeline
    def pair() -> None:
        two(one())
    """
)


def _rows(store: Store) -> list[Any]:
    with store.read() as conn:
        return list(conn.execute(sa.select(deliveries).order_by(deliveries.c.id)))


def _scenario(make: Callable[..., Server], tmp_path: Path, db_url: str) -> None:
    srv = make(
        FERRYMAN_ADMIN_PASSWORD=ADMIN_PASSWORD,
        FERRYMAN_DATABASE_URL=db_url,
        FERRYMAN_DELIVERY_TIMEOUT="1",
        FERRYMAN_DELIVERY_BACKOFF="0.2",
        FERRYMAN_DELIVERY_MAX_BACKOFF="1",
        FERRYMAN_DELIVERY_MAX_ATTEMPTS="1000",
    )
    pipes = tmp_path / "pair.py"
    pipes.write_text(PIPELINE)
    receiver = Receiver(free_port())  # down for now
    store = Store(db_url)
    try:
        srv.start()
        srv.wait_healthy()
        status, tok = http(
            "POST", f"{srv.url}/token", form={"username": "admin", "password": ADMIN_PASSWORD}
        )
        assert status == 200, tok
        token = tok["access_token"]
        status, sub = http(
            "POST",
            f"{srv.url}/subscriptions",
            body={"name": "down-then-up", "url": f"http://127.0.0.1:{receiver.port}/in"},
            token=token,
        )
        assert status == 201, sub
        secret = sub["secret"]
        status, again = http("GET", f"{srv.url}/subscriptions/down-then-up", token=token)
        assert status == 200 and "secret" not in again and secret not in str(again)

        from ferryman.dsl.loader import load_pipeline

        spec = load_pipeline(f"{pipes}:pair").model_dump(mode="json")
        status, reg = http(
            "POST", f"{srv.url}/namespaces/default/pipelines", body=spec, token=token
        )
        assert status == 201, reg
        run_ids = []
        for _ in range(2):
            status, run = http(
                "POST", f"{srv.url}/namespaces/default/pipelines/pair/runs", body={}, token=token
            )
            assert status == 201, run
            run_ids.append(run["id"])

        def ended() -> bool:
            states = [http("GET", f"{srv.url}/runs/{r}", token=token)[1]["state"] for r in run_ids]
            return all(s == "succeeded" for s in states)

        wait_for("the runs to succeed", ended, 60, srv.check)
        with store.read() as conn:
            evs = list(
                conn.execute(
                    sa.select(events).where(events.c.run_id.in_(run_ids)).order_by(events.c.seq)
                )
            )
        wait_for(
            "failed attempts against the dead receiver",
            lambda: (
                len(_rows(store)) == len(evs)
                and all(r.state == "pending" for r in _rows(store))
                and any(r.attempts >= 1 and r.last_error for r in _rows(store))
            ),
            30,
            srv.check,
        )
        status, page = http("GET", f"{srv.url}/deliveries?state=pending", token=token)
        assert status == 200 and len(page["items"]) == len(evs)
        # one whose failed attempt is recorded (``attempts`` also counts one in flight)
        tried = next(i for i in page["items"] if i["last_error"])
        status, detail = http("GET", f"{srv.url}/deliveries/{tried['id']}", token=token)
        assert status == 200 and "cannot connect" in detail["attempt_log"][0]["error"]

        srv.kill9()
        srv.start()
        srv.wait_healthy()
        receiver.start()
        wait_for(
            "every delivery to be delivered",
            lambda: all(r.state == "delivered" for r in _rows(store)),
            60,
            srv.check,
        )
        time.sleep(0.5)
        assert srv.terminate() == 0
    finally:
        receiver.stop()
        store.dispose()

    by_id = {e.id: e for e in evs}
    got = []
    for headers, body in receiver.requests:
        payload = Webhook(secret).verify(body, headers)
        assert payload["id"] == headers["webhook-id"]
        got.append(payload["id"])
    assert set(got) == set(by_id), "every event arrived after the restart"
    for run_id in run_ids:
        seen: list[str] = []
        for i in got:
            if by_id[i].run_id == run_id and i not in seen:
                seen.append(i)
        assert seen == [e.id for e in evs if e.run_id == run_id], "in order per run"
    assert secret not in srv.err() and secret not in srv.out()


def test_deliveries_survive_kill9_sqlite(server_env: Callable[..., Server], tmp_path: Path) -> None:
    _scenario(server_env, tmp_path, f"sqlite:///{tmp_path / 'home' / 'ferryman.db'}")


@pytest.mark.postgres
def test_deliveries_survive_kill9_postgres(
    server_env: Callable[..., Server], tmp_path: Path, pg_database: str
) -> None:
    store = Store(pg_database)
    names = ", ".join(t.name for t in reversed(metadata.sorted_tables))
    with store.engine.begin() as c:
        c.exec_driver_sql(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
    store.dispose()
    _scenario(server_env, tmp_path, pg_database)

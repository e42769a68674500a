"""A step declares ``secrets=["CAST_API_KEY"]``; the value is resolved from
each resolver (env, file, kubernetes on the kmock emulator, ferryman's
store) and masked everywhere ferryman keeps or sends text: logs, events,
outputs, errors, the run-completion webhook, event deliveries, the worker's
own log records, and the database (every row of every table, and the
SQLite file's bytes). On SQLite and PostgreSQL; steps run in real processes.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.k8s_fake import FakeCluster
from tests.webhook_support import Receiver, always

from ferryman.domain.options import RunOptions
from ferryman.dsl.loader import load_pipeline
from ferryman.engine.callback_sender import CallbackSender
from ferryman.engine.event_deliverer import EventDeliverer
from ferryman.engine.worker import Worker
from ferryman.services import subscriptions as subs
from ferryman.services.catalog import register
from ferryman.services.queries import get_events, get_logs, get_run
from ferryman.services.runs import RunService
from ferryman.services.secret_store import set_secret
from ferryman.settings import Settings
from ferryman.store.engine import Store
from ferryman.store.tables import metadata

KEY = "cast-Key-4f9a1c7e2b5d"
BOT = Path(__file__).parent.parent / "pipelines" / "secret_bot.py"
Make = Callable[..., Receiver]


@pytest.fixture(scope="module")
def cluster() -> Iterator[FakeCluster]:
    with FakeCluster() as c:
        yield c


def _forms(value: str) -> list[str]:
    raw = value.encode()
    return [value, value.lower(), raw.hex(), base64.b64encode(raw).decode()]


def _resolver_settings(
    kind: str, settings: Settings, store: Store, tmp_path: Path, request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> Settings:  # fmt: skip
    """Put KEY where ``kind`` reads it; the settings that select it."""
    if kind == "env":
        monkeypatch.setenv("CAST_API_KEY", KEY)
        return settings.updated(secrets_resolvers="env")
    monkeypatch.delenv("CAST_API_KEY", raising=False)
    if kind == "file":
        d = tmp_path / "mounted"
        d.mkdir()
        (d / "CAST_API_KEY").write_text(KEY + "\n")
        return settings.updated(secrets_resolvers="env,file", secrets_dir=str(d))
    if kind == "kubernetes":
        cluster: FakeCluster = request.getfixturevalue("cluster")
        ns = f"e2e-{tmp_path.name[-12:].lower()}"
        from kubernetes import client as k8s

        cfg = k8s.Configuration()
        cfg.host = cluster.url
        with k8s.ApiClient(cfg) as api:
            k8s.CoreV1Api(api).create_namespaced_secret(ns, {
                "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bot-secrets"},
                "data": {"CAST_API_KEY": base64.b64encode(KEY.encode()).decode()},
            })  # fmt: skip
        infra = {"kubernetes": {"api_server": cluster.url, "token": "e2e-token-0123456789"}}
        return settings.updated(
            secrets_resolvers="env,kubernetes", secrets_k8s_namespace=ns,
            secrets_k8s_secret="bot-secrets", infra_config=infra,
        )  # fmt: skip
    with store.write() as conn:
        set_secret(conn, "CAST_API_KEY", KEY, by="e2e")
    return settings.updated(secrets_resolvers="env,store")


@pytest.mark.parametrize("kind", ["env", "file", "kubernetes", "store"])
def test_secret_resolved_and_masked_everywhere(
    kind: str,
    store: Store,
    settings: Settings,
    tmp_path: Path,
    receivers: Make,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    s = _resolver_settings(kind, settings, store, tmp_path, request, monkeypatch)
    s = s.updated(callback_backoff=0.1, delivery_backoff=0.1)
    api = receivers(always(200, b'{"ok": true}'))
    hooks = receivers(always(200, b"thanks"))
    with store.write() as conn:
        subs.create_subscription(conn, subs.SubscriptionCreate.model_validate(
            {"name": "all-events", "url": hooks.url}))  # fmt: skip
        pv = register(conn, "default", load_pipeline(f"{BOT}:secret_bot"))
    started = RunService(store).start_version(
        pv,
        {"url": f"http://127.0.0.1:{api.port}/v1/casts"},
        options=RunOptions.model_validate({"infrastructure": "process", "webhook_url": hooks.url}),
    )

    with caplog.at_level(logging.DEBUG):
        Worker(store, s).run_until({started.id}, timeout=60)
        CallbackSender(store, s).run_until_idle(30)
        EventDeliverer(store, s).run_until_idle(30)

    with store.read() as conn:
        run = get_run(conn, started.id)
        logs = [r["line"] for r in get_logs(conn, started.id)]
        events = get_events(conn, started.id)
    nodes = {n["name"]: n for n in run["nodes"]}

    # The step got the value: the API saw it, and the step ran to its error.
    assert nodes["call_api"]["state"] == "succeeded", nodes["call_api"]["error"]
    (call,) = api.requests
    assert call.headers["authorization"] == f"Bearer {KEY}"
    assert call.json() == {"cast": 42} and call.headers["idempotency-key"] == "cast-42"
    assert nodes["complain"]["state"] == "failed"
    assert "the API refused key ********" in nodes["complain"]["error"]
    assert any("the key itself: ********" in line for line in logs)
    assert any("Authorization: Bearer ********" in line for line in logs)

    # Masked everywhere ferryman keeps or sends text.
    texts: dict[str, str] = {
        "logs": "\n".join(logs),
        "events": repr(events),
        "run": repr(run),
        "webhook and deliveries": "\n".join(
            r.body.decode() + repr(r.headers) for r in hooks.requests
        ),
        "worker log records": caplog.text,
        "database": _dump(store),
    }
    assert any(r.json().get("type") == "run.failed" for r in hooks.requests)  # the callback
    assert len(hooks.requests) >= 5  # and the events
    if store.is_sqlite:
        texts["sqlite file"] = _sqlite_bytes(store)
    for where, text in texts.items():
        for form in _forms(KEY):
            assert form not in text, f"{form!r} found in the {where}"


def _dump(store: Store) -> str:
    """Every row of every table as stored (raw SQL: sealed columns stay sealed)."""
    out = []
    with store.read() as conn:
        for table in metadata.sorted_tables:
            out += [repr(tuple(r)) for r in conn.exec_driver_sql(f"SELECT * FROM {table.name}")]
    return "\n".join(out)


def _sqlite_bytes(store: Store) -> str:
    db = Path(str(store.url.database))
    raw = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))
    return raw.decode("latin-1")


def test_undeclared_and_reserved_names_fail_the_attempt(
    store: Store, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CAST_API_KEY", raising=False)
    with store.write() as conn:
        pv = register(conn, "default", load_pipeline(f"{BOT}:secret_bot"))
    started = RunService(store).start_version(
        pv, {"url": "http://127.0.0.1:9/"}, options=RunOptions(infrastructure="process")
    )
    Worker(store, settings.updated(secrets_resolvers="env,store")).run_until(
        {started.id}, timeout=60
    )
    with store.read() as conn:
        run = get_run(conn, started.id)
    (call,) = [n for n in run["nodes"] if n["name"] == "call_api"]
    assert call["state"] == "failed"
    assert call["error"] == (
        "secrets: secret(s) not found: CAST_API_KEY (looked in: env, store; "
        "see FERRYMAN_SECRETS_RESOLVERS)"
    )

"""Attacks from the outside (issue 11, items 1, 7-10), against the API served
over real HTTP on loopback, on SQLite and PostgreSQL.

- who may register code (the developer role) and the users API taking it;
- subscription URLs shown to non-admins without path and query;
- private database files; encrypted subscription secrets (and key rotation);
  SQL parameters never in error messages;
- webhooks and subscriptions to loopback, private and metadata addresses, in
  production with and without an allowed network, and a name that resolves
  to loopback only when the request is sent;
- request bodies, parameters and specs past their limits; run lists without
  parameters; a billion-laughs YAML;
- ``after=10**30``, ``Last-Event-ID: ²``, an idempotency key re-used with
  other labels.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from standardwebhooks.webhooks import Webhook
from tests.api_support import assert_error, bearer, live_server
from tests.webhook_support import Receiver, always

from ferryman.api.app import create_app
from ferryman.domain.options import RunOptions
from ferryman.dsl.loader import load_pipeline
from ferryman.engine.callback_sender import CallbackSender
from ferryman.engine.event_deliverer import EventDeliverer
from ferryman.engine.worker import Worker
from ferryman.secret_box import PREFIX, SecretBox, SecretBoxError
from ferryman.services import auth
from ferryman.services.catalog import register
from ferryman.services.deliveries import get_delivery, list_deliveries
from ferryman.services.runs import RunService
from ferryman.services.subscriptions import (
    SubscriptionCreate,
    create_subscription,
    reseal_secrets,
)
from ferryman.settings import Settings
from ferryman.store.engine import Store
from ferryman.store.migrate import downgrade, upgrade
from ferryman.store.tables import callbacks

ROOT = Path(__file__).resolve().parents[2]
PIPES = str(ROOT / "tests" / "pipelines" / "basic.py")
ROLES = ("admin", "developer", "operator", "viewer")
SPEC = {
    "name": "two",
    "infrastructure": "inline",
    "params": [{"name": "blob", "type": "string", "required": False}],
    "steps": [{"name": "a", "function": {"module": "os.path", "qualname": "join"}}],
}


def tokens_of(store: Store) -> dict[str, dict[str, str]]:
    """Authorization headers per role (users without password: API tokens)."""
    out = {}
    with store.write() as conn:
        for role in ROLES:
            user = auth.create_user(conn, f"{role}-x", None, auth.Role(role))
            _, token = auth.create_api_token(conn, user["id"], "tests")
            out[role] = bearer(token)
    return out


@pytest.fixture
def api(settings: Settings, store: Store) -> Callable[..., Any]:
    """``api(**settings changes)``: a context manager serving the app on
    loopback, yielding an httpx client."""

    def serve(**changes: Any) -> Any:
        s = Settings.model_validate({**settings.model_dump(), **changes})
        return _served(s, store)

    return serve


class _served:
    def __init__(self, settings: Settings, store: Store) -> None:
        self._ctx = live_server(create_app(settings, store))

    def __enter__(self) -> httpx.Client:
        url = self._ctx.__enter__()
        self._client = httpx.Client(base_url=url, timeout=60)
        return self._client

    def __exit__(self, *exc: Any) -> None:
        self._client.close()
        self._ctx.__exit__(*exc)


@pytest.fixture
def who(store: Store) -> dict[str, dict[str, str]]:
    return tokens_of(store)


# -- item 1: registering code ---------------------------------------------------------


def test_only_developers_and_admins_register_code(
    api: Callable[..., Any], who: dict[str, dict[str, str]]
) -> None:
    with api() as c:
        for role in ("viewer", "operator"):
            err = assert_error(
                c.post("/namespaces/default/pipelines", json=SPEC, headers=who[role]), 403
            )
            assert "developer" in err["message"]
        r = c.post("/namespaces/default/pipelines", json=SPEC, headers=who["developer"])
        assert r.status_code == 201, r.text
        changed = {**SPEC, "description": "by an admin"}
        r = c.post("/namespaces/default/pipelines", json=changed, headers=who["admin"])
        assert r.status_code == 201, r.text
        # operators run what was registered
        r = c.post("/namespaces/default/pipelines/two/runs", json={}, headers=who["operator"])
        assert r.status_code == 201, r.text


def test_steps_may_not_name_ferryman_variables(
    api: Callable[..., Any], who: dict[str, dict[str, str]]
) -> None:
    step = {**SPEC["steps"][0], "env": {"FERRYMAN_DATABASE_URL": "x"},  # type: ignore[dict-item]
            "secrets": ["FERRYMAN_JWT_SECRET"]}  # fmt: skip
    with api() as c:
        err = assert_error(
            c.post("/namespaces/default/pipelines", json={**SPEC, "steps": [step]},
                   headers=who["developer"]),
            422,
        )  # fmt: skip
    paths = {d["path"] for d in err["details"]}
    assert paths == {"steps.0.env", "steps.0.secrets"}, err


def test_the_users_api_takes_the_developer_role(
    api: Callable[..., Any], who: dict[str, dict[str, str]]
) -> None:
    with api() as c:
        r = c.post("/users", json={"username": "dee", "role": "developer"}, headers=who["admin"])
        assert r.status_code == 201 and r.json()["role"] == "developer", r.text
        uid = r.json()["id"]
        r = c.patch(f"/users/{uid}", json={"role": "operator"}, headers=who["admin"])
        assert r.json()["role"] == "operator"
        for role in ("developer", "operator", "viewer"):
            assert_error(
                c.post("/users", json={"username": f"x{role}", "role": "admin"}, headers=who[role]),
                403,
            )


# -- item 7: subscription URLs, files, secrets at rest, SQL parameters --------------------


def test_non_admins_see_subscription_urls_without_path_or_query(
    api: Callable[..., Any], who: dict[str, dict[str, str]], tmp_path: Path
) -> None:
    url = "https://user:pw@hooks.example.com:8443/services/T0/B0/s3cr3tpath?token=abc123"
    with api() as c:
        r = c.post("/subscriptions", json={"name": "ops", "url": url}, headers=who["admin"])
        assert r.status_code == 201, r.text
        assert c.get("/subscriptions/ops", headers=who["admin"]).json()["url"] == url
        for role in ("developer", "operator", "viewer"):
            one = c.get("/subscriptions/ops", headers=who[role]).json()
            listed = c.get("/subscriptions", headers=who[role]).json()["items"]
            assert one["url"] == listed[0]["url"] == "https://hooks.example.com:8443/…", role
        # the CLI shows what the API gives it
        token = who["viewer"]["Authorization"].split(" ", 1)[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("FERRYMAN_")}
        env.update(FERRYMAN_HOME=str(tmp_path / "cli"), FERRYMAN_TOKEN=token, COLUMNS="250")
        ls = subprocess.run(
            [sys.executable, "-m", "ferryman", "subscriptions", "ls", "--server",
             str(c.base_url)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert ls.returncode == 0, ls.stderr
    assert "hooks.example.com" in ls.stdout
    for leak in ("s3cr3tpath", "abc123", "pw@"):
        assert leak not in ls.stdout


def test_the_home_and_the_sqlite_database_are_private(tmp_path: Path) -> None:
    s = Settings(home=tmp_path / "fresh-home")
    store = Store.from_settings(s)
    try:
        with store.write() as conn:
            conn.execute(sa.text("CREATE TABLE t (x INTEGER)"))
            conn.execute(sa.text("INSERT INTO t VALUES (1)"))
            db = s.home / "ferryman.db"
            files = [db, db.with_name("ferryman.db-wal"), db.with_name("ferryman.db-shm")]
            assert stat.S_IMODE(s.home.stat().st_mode) == 0o700
            for f in files:  # while the database is open: the WAL files exist
                assert f.exists() and stat.S_IMODE(f.stat().st_mode) == 0o600, f
    finally:
        store.dispose()
    # an existing database made world-readable before is tightened
    files = [f for f in files if f.exists()]  # closing may have checkpointed the WAL away
    for f in files:
        f.chmod(0o644)
    Store.from_settings(s).dispose()
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f


def raw_subscription(store: Store) -> Any:
    with store.read() as conn:
        return conn.execute(sa.text("SELECT secret, headers FROM subscriptions")).one()


def test_subscription_secrets_and_headers_are_encrypted_at_rest(
    api: Callable[..., Any],
    who: dict[str, dict[str, str]],
    store: Store,
    settings: Settings,
    receivers: Callable[..., Receiver],
) -> None:
    rcv = receivers(always())
    secret = "whsec_" + "c2VjcmV0LXNpZ25pbmcta2V5LTAxMjM0NTY3ODk="
    body = {"name": "enc", "url": rcv.url, "secret": secret,
            "headers": {"Authorization": "Bearer header-token-value"}}  # fmt: skip
    with api() as c:
        assert c.post("/subscriptions", json=body, headers=who["admin"]).status_code == 201
        shown = c.get("/subscriptions/enc", headers=who["admin"]).json()
        assert shown["headers"] == {"Authorization": "****"}
        test = c.post("/subscriptions/enc/test", json={}, headers=who["admin"]).json()
    assert test["ok"], test
    raw = raw_subscription(store)
    headers = raw.headers if isinstance(raw.headers, dict) else json.loads(raw.headers)
    assert raw.secret.startswith(PREFIX) and "c2VjcmV0" not in raw.secret
    assert headers["Authorization"].startswith(PREFIX)
    if store.is_sqlite:
        data = b"".join(p.read_bytes() for p in settings.home.glob("ferryman.db*") if p.is_file())
        assert b"header-token-value" not in data and b"c2VjcmV0LXNpZ25pbmc" not in data
    # what was sent was signed with the real secret and carried the real header
    (req,) = rcv.requests
    assert req.headers["authorization"] == "Bearer header-token-value"
    Webhook(secret).verify(req.body, req.headers)
    # another key reads nothing, and says why
    other = Store(store.url.render_as_string(hide_password=False),
                  secret_box=SecretBox.of("another-key-" + "x1y2z3w4" * 4))  # fmt: skip
    try:
        with other.read() as conn, pytest.raises(SecretBoxError, match="same key"):
            conn.execute(sa.text("SELECT 1")).all()
            from ferryman.services.subscriptions import subscription_row

            subscription_row(conn, "enc").secret  # noqa: B018
    finally:
        other.dispose()


def test_key_rotation_with_db_reseal(store: Store, settings: Settings) -> None:
    from ferryman.services.subscriptions import SubscriptionCreate, create_subscription

    old, new = "old-key-" + "a1B2c3D4" * 4, "new-key-" + "e5F6g7H8" * 4
    url = store.url.render_as_string(hide_password=False)
    first = Store(url, secret_box=SecretBox.of(old))
    with first.write() as conn:
        create_subscription(conn, SubscriptionCreate(name="rot", url="https://x.example/h",
                                                     headers={"X-Key": "v1"}))  # fmt: skip
    first.dispose()
    both = Store(url, secret_box=SecretBox.of(new, old))
    with both.write() as conn:
        assert reseal_secrets(conn, both.secret_box) == 1
    both.dispose()
    only_new = Store(url, secret_box=SecretBox.of(new))
    try:
        with only_new.read() as conn:
            from ferryman.services.subscriptions import subscription_row

            row = subscription_row(conn, "rot")
            assert row.headers == {"X-Key": "v1"} and row.secret.startswith("whsec_")
    finally:
        only_new.dispose()


def test_migration_0008_seals_existing_rows_and_downgrade_opens_them(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/m.db"
    store = Store(url, secret_box=SecretBox.of("migration-key-" + "q1W2e3R4" * 4))
    try:
        upgrade(store, "0007")
        with store.write() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO subscriptions (id, name, url, format, event_types, namespaces, "
                    "pipelines, labels, secret, headers, enabled, source, created_at, updated_at) "
                    "VALUES ('s1', 'old', 'https://x.example/', 'ferryman', '[]', '[]', '[]', "
                    "'{}', 'whsec_cGxhaW4tb2xkLXNlY3JldC12YWx1ZQ==', '{\"X-Key\": \"plain\"}', "
                    "1, 'api', '2024-01-01 00:00:00', '2024-01-01 00:00:00')"
                )
            )
        upgrade(store)
        raw = raw_subscription(store)
        assert raw.secret.startswith(PREFIX) and PREFIX in raw.headers
        downgrade(store, "0007")
        raw = raw_subscription(store)
        assert raw.secret == "whsec_cGxhaW4tb2xkLXNlY3JldC12YWx1ZQ=="
        assert json.loads(raw.headers) == {"X-Key": "plain"}
    finally:
        store.dispose()


def test_sql_parameters_never_reach_error_messages(store: Store) -> None:
    marker = "param-marker-7f3a"
    with pytest.raises(sa.exc.IntegrityError) as info, store.write() as conn:
        for _ in range(2):  # the second insert breaks the primary key
            conn.execute(
                sa.text("INSERT INTO subscription_generation (id, generation) VALUES (:i, :g)"),
                {"i": 7, "g": 1},
            )
            conn.execute(sa.text("SELECT :m"), {"m": marker})
    assert marker not in str(info.value) and "hidden" in str(info.value).lower()


# -- item 8: where ferryman sends --------------------------------------------------------


def callback_rows(store: Store) -> list[Any]:
    with store.read() as conn:
        return list(conn.execute(sa.select(callbacks)).all())


def finish(store: Store, settings: Settings, webhook: str) -> str:
    with store.write() as conn:
        pv = register(conn, "default", load_pipeline(f"{PIPES}:fan"))
    started = RunService(store).start_version(
        pv, {"n": 1}, options=RunOptions(infrastructure="inline", webhook_url=webhook)
    )
    Worker(store, settings).run_until({started.id}, timeout=60)
    return started.id


def test_webhooks_to_loopback_and_metadata_are_refused(
    api: Callable[..., Any],
    who: dict[str, dict[str, str]],
    store: Store,
    receivers: Callable[..., Receiver],
) -> None:
    rcv = receivers()
    with api() as c:
        r = c.post("/namespaces/default/pipelines", json=SPEC, headers=who["developer"])
        assert r.status_code == 201
        runs = "/namespaces/default/pipelines/two/runs"
        op = who["operator"]
        # development: everything but the metadata services
        assert c.post(runs, json={"webhook_url": rcv.url}, headers=op).status_code == 201
        err = assert_error(
            c.post(runs, json={"webhook_url": "http://169.254.169.254/latest/"}, headers=op), 422
        )
        assert "metadata" in err["message"] and err["details"][0]["path"] == "webhook_url"
    with api(env="production") as c:
        for url in (rcv.url, "http://10.0.0.1/x", "http://[::1]/", "http://localhost:1/"):
            err = assert_error(c.post(runs, json={"webhook_url": url}, headers=op), 422)
            assert "destination refused" in err["message"], url
        r = c.post("/default/pipelines/run/two/", json={"webhook_uri": rcv.url}, headers=op)
        assert r.status_code == 400 and "destination refused" in r.json()["response"]["message"]
        err = assert_error(
            c.post("/subscriptions", json={"name": "lo", "url": rcv.url}, headers=who["admin"]),
            422,
        )
        assert "not a public address" in err["message"]
    with api(env="production", outbound_allow_networks="127.0.0.0/8") as c:
        assert c.post(runs, json={"webhook_url": rcv.url}, headers=op).status_code == 201
        r = c.post("/subscriptions", json={"name": "lo", "url": rcv.url}, headers=who["admin"])
        assert r.status_code == 201, r.text


@pytest.fixture
def rebinding(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``rebind.test`` resolves to 127.0.0.1, as a rebinding name does at send time."""
    real = socket.getaddrinfo

    def fake(host: Any, *args: Any, **kw: Any) -> Any:
        return real("127.0.0.1" if host == "rebind.test" else host, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    yield


@pytest.mark.usefixtures("rebinding")
def test_a_name_resolving_to_loopback_at_send_time_is_refused(
    store: Store, settings: Settings, receivers: Callable[..., Receiver]
) -> None:
    rcv = receivers()
    hook = f"http://rebind.test:{rcv.port}/hook"
    fast = {"callback_backoff": 0.1, "callback_max_backoff": 0.2, "callback_max_attempts": 3}
    prod = Settings.model_validate({**settings.model_dump(), "env": "production", **fast})
    finish(store, prod, hook)  # a name: accepted when set
    CallbackSender(store, prod).run_until_idle(20)
    (row,) = callback_rows(store)
    assert row.state == "dead" and row.attempts == 1, row
    assert row.last_error.startswith("destination refused: rebind.test resolves to 127.0.0.1")
    assert rcv.requests == []
    allowed = Settings.model_validate(
        {**prod.model_dump(), "outbound_allow_networks": "127.0.0.0/8"}
    )
    finish(store, allowed, hook)
    CallbackSender(store, allowed).run_until_idle(20)
    assert sorted(r.state for r in callback_rows(store)) == ["dead", "delivered"]
    assert len(rcv.requests) == 1


@pytest.mark.usefixtures("rebinding")
def test_test_sends_show_no_internal_answers(
    api: Callable[..., Any], who: dict[str, dict[str, str]], receivers: Callable[..., Receiver]
) -> None:
    ok = receivers(always(200, b"fine, thanks"))
    internal = receivers(always(500, b"internal admin page: db password hunter2"))
    admin = who["admin"]
    with api(env="production") as c:
        for name, rcv in (("ok", ok), ("internal", internal)):
            url = f"http://rebind.test:{rcv.port}/hook"
            r = c.post("/subscriptions", json={"name": name, "url": url}, headers=admin)
            assert r.status_code == 201, r.text  # a name: judged when sending
        refused = c.post("/subscriptions/internal/test", json={}, headers=admin).json()
        assert refused["status"] is None and refused["response"] is None
        assert refused["error"].startswith("destination refused: rebind.test resolves to")
        assert internal.requests == []
    with api(env="production", outbound_allow_networks="127.0.0.0/8") as c:
        shown = c.post("/subscriptions/ok/test", json={}, headers=admin).json()
        assert shown["status"] == 200 and shown["response"] == "fine, thanks"
        hidden = c.post("/subscriptions/internal/test", json={}, headers=admin).json()
        assert hidden["status"] == 500 and hidden["response"] is None, hidden
        assert len(internal.requests) == 1


# -- item 9: sizes ---------------------------------------------------------------------------


def test_callbacks_and_deliveries_keep_no_internal_answers(
    store: Store, settings: Settings, receivers: Callable[..., Receiver]
) -> None:
    # Issue 11: a non-2xx answer of an allowed private network is never kept
    # (the same rule as test sends); a 2xx answer is.
    internal = receivers(always(500, b"internal admin page: db password hunter2"))
    fine = receivers(always(200, b"fine, thanks"))
    s = Settings.model_validate(
        {
            **settings.model_dump(),
            "env": "production",
            "outbound_allow_networks": "127.0.0.0/8",
            "callback_max_attempts": 1,
            "delivery_max_attempts": 1,
            "poll_seconds": 0.2,
        }
    )
    with store.write() as conn:
        for name, rcv in (("internal", internal), ("fine", fine)):
            data = {"name": name, "url": rcv.url, "event_types": ["RunSucceeded"]}
            create_subscription(conn, SubscriptionCreate.model_validate(data))
    finish(store, s, internal.url)
    CallbackSender(store, s).run_until_idle(20)
    EventDeliverer(store, s).run_until_idle(30)
    (row,) = callback_rows(store)
    assert (row.state, row.last_status, row.last_error) == ("dead", 500, "HTTP 500")
    with store.read() as conn:
        got = {
            d["subscription"]: get_delivery(conn, d["id"])["attempt_log"]
            for d in list_deliveries(conn)
        }
    assert [(a["status"], a["response"]) for a in got["internal"]] == [(500, None)]
    assert [(a["status"], a["response"]) for a in got["fine"]] == [(200, "fine, thanks")]
    assert len(internal.requests) == 2  # the callback and the delivery were sent


@pytest.fixture
def two(api: Callable[..., Any], who: dict[str, dict[str, str]]) -> None:
    with api() as c:
        r = c.post("/namespaces/default/pipelines", json=SPEC, headers=who["developer"])
        assert r.status_code == 201, r.text


@pytest.mark.usefixtures("two")
def test_request_bodies_past_the_limit_are_refused_before_they_are_read(
    api: Callable[..., Any], who: dict[str, dict[str, str]]
) -> None:
    runs = "/namespaces/default/pipelines/two/runs"
    big = json.dumps({"params": {"blob": "x" * 20_000_000}}).encode()
    headers = {**who["operator"], "Content-Type": "application/json"}
    with api() as c:
        started = time.monotonic()
        err = assert_error(c.post(runs, content=big, headers=headers), 413, "too_large")
        assert "8388608" in err["message"] and "FERRYMAN_HTTP_MAX_BODY_BYTES" in err["message"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: chunked
            for i in range(0, len(big), 65536):
                yield big[i : i + 65536]

        err = assert_error(c.post(runs, content=chunks(), headers=headers), 413, "too_large")
        assert "8388608" in err["message"]
        took = time.monotonic() - started
        # the form login route counts too
        form = {"username": "admin", "password": "p" * 9_000_000}
        assert_error(c.post("/token", data=form), 413, "too_large")
        assert took < 30
        # under the body limit, over the parameters' limit
        mid = {"params": {"blob": "y" * 2_000_000}}
        err = assert_error(c.post(runs, json=mid, headers=who["operator"]), 413, "too_large")
        assert "FERRYMAN_MAX_PARAMS_BYTES" in err["message"] and "1048576" in err["message"]
        spec = {**SPEC, "description": "z" * 5_000_000}
        err = assert_error(
            c.post("/namespaces/default/pipelines", json=spec, headers=who["developer"]), 413
        )
        assert "FERRYMAN_MAX_SPEC_BYTES" in err["message"]
        assert c.get("/health").status_code == 200
    with api(http_max_body_bytes=4096, max_params_bytes=100) as c:
        err = assert_error(c.post(runs, json={"params": {"a": "b" * 200}}, headers=headers), 413)
        assert "FERRYMAN_MAX_PARAMS_BYTES" in err["message"] and "100 bytes" in err["message"]


@pytest.mark.usefixtures("two")
def test_run_lists_leave_parameters_out_unless_asked(
    api: Callable[..., Any], who: dict[str, dict[str, str]]
) -> None:
    from ferryman.client import Client

    runs = "/namespaces/default/pipelines/two/runs"
    params = {"blob": "p" * 500_000}
    with api() as c:
        r = c.post(runs, json={"params": params}, headers=who["operator"])
        assert r.status_code == 201
        run_id = r.json()["id"]
        listed = c.get("/runs", headers=who["viewer"])
        assert len(listed.content) < 10_000 and listed.json()["items"][0]["params"] is None
        full = c.get("/runs", params={"include_params": "true"}, headers=who["viewer"]).json()
        assert full["items"][0]["params"] == params
        assert c.get(f"/runs/{run_id}", headers=who["viewer"]).json()["params"] == params
        token = who["viewer"]["Authorization"].split(" ", 1)[1]
        with Client(str(c.base_url), token) as client:
            assert client.list_runs().items[0].params is None
            assert client.list_runs(include_params=True).items[0].params == params
            assert next(iter(client.iter_runs(include_params=True))).params == params


def test_a_billion_laughs_yaml_is_refused_at_once(tmp_path: Path) -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    prev = "a"
    for name in "bcdefghi":
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
        prev = name
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join([*lines, "name: bomb", "steps: []"]) + "\n")
    huge = tmp_path / "huge.yaml"
    huge.write_text("name: huge\nsteps: []\ndescription: " + "w" * 5_000_000 + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERRYMAN_")}
    env["FERRYMAN_HOME"] = str(tmp_path / "home")
    for path, why in ((bomb, "more than 1000000 nodes"), (huge, "limited to 4194304")):
        started = time.monotonic()
        r = subprocess.run(
            [sys.executable, "-m", "ferryman", "deploy", str(path)],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert r.returncode == 2, r.stdout + r.stderr
        assert str(path) in r.stderr and why in r.stderr, r.stderr
        assert time.monotonic() - started < 30


# -- item 10: positions and idempotency -------------------------------------------------


@pytest.mark.usefixtures("two")
def test_positions_past_any_id_and_odd_last_event_ids(
    api: Callable[..., Any], who: dict[str, dict[str, str]]
) -> None:
    runs = "/namespaces/default/pipelines/two/runs"
    viewer = who["viewer"]
    with api() as c:
        run_id = c.post(runs, json={}, headers=who["operator"]).json()["id"]
        c.post(f"/runs/{run_id}/cancel", headers=who["operator"])  # ends it: streams end
        for path in ("logs", "events"):
            err = assert_error(c.get(f"/runs/{run_id}/{path}?after={10**30}", headers=viewer), 422)
            assert err["details"][0]["path"] == "after"
            r = c.get(f"/runs/{run_id}/{path}?after={2**31 - 1}", headers=viewer)
            assert r.status_code == 200 and r.json()["items"] == []
        assert_error(c.get(f"/runs/{run_id}/logs/stream?after={10**30}", headers=viewer), 422)
        for last in (b"\xb2", b"\xd9\xa3", b"12abc", b"99999999999999999999", b"-5", b"7"):
            r = c.get(f"/runs/{run_id}/logs/stream", headers={**viewer, "Last-Event-ID": last})
            assert r.status_code == 200, (last, r.text)
            assert "event: end" in r.text


@pytest.mark.usefixtures("two")
def test_an_idempotency_key_reused_with_other_labels_is_a_conflict(
    api: Callable[..., Any], who: dict[str, dict[str, str]]
) -> None:
    runs = "/namespaces/default/pipelines/two/runs"
    headers = {**who["operator"], "Idempotency-Key": "nightly"}
    with api() as c:
        first = c.post(runs, json={"labels": {"team": "a"}}, headers=headers)
        assert first.status_code == 201
        again = c.post(runs, json={"labels": {"team": "a"}}, headers=headers)
        assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
        for other in ({"labels": {"team": "b"}}, {}, {"labels": {"team": "a"}, "timeout": 5}):
            err = assert_error(c.post(runs, json=other, headers=headers), 409, "conflict")
            assert err["details"] == {"run_id": first.json()["id"]}
        assert (
            "labels"
            in assert_error(c.post(runs, json={"labels": {"team": "b"}}, headers=headers), 409)[
                "message"
            ]
        )


def test_the_secret_key_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FERRYMAN_DATABASE_URL", "FERRYMAN_SECRET_KEY", "FERRYMAN_JWT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    strong = "k3y-" + "Zq8Lm2Xp" * 5
    pg = "postgresql://postgres@127.0.0.1:5432/x"
    home = tmp_path / "home"
    Settings(home=home, env="production", jwt_secret=strong).check_production()  # SQLite
    with pytest.raises(ValueError, match="FERRYMAN_SECRET_KEY set"):
        Settings(home=home, env="production", jwt_secret=strong, database_url=pg).check_production()
    Settings(
        home=home, env="production", jwt_secret=strong, database_url=pg, secret_key=strong
    ).check_production()
    with pytest.raises(ValueError, match=r"FERRYMAN_SECRET_KEY \(key 2\) is too weak"):
        Settings(secret_key=f"{strong},short").check_secret_key()
    # unset: a key generated once per home, private, the same for every process
    box = SecretBox.from_settings(Settings(home=home))
    sealed = box.seal("a subscription secret")
    key_file = home / "secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert SecretBox.from_settings(Settings(home=home)).open(sealed) == "a subscription secret"
    assert sealed.startswith(PREFIX) and "subscription" not in sealed

"""Authentication and authorization of the REST API, on SQLite and PostgreSQL.

The central test walks every operation in the OpenAPI schema, read at test
time (so routes added later are covered without touching this file), and
checks that each one except the few public ones refuses a request without
credentials, or with credentials that are forged, tampered with, expired or
revoked: 401, the JSON error shape and a ``WWW-Authenticate`` header. A new
public route makes it fail until it is added to ``PUBLIC`` below, on purpose.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import fastapi.routing
import httpx
import jwt
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.routing import APIRoute
from httpx import Response
from starlette.routing import Route
from tests.api_support import assert_error, bearer, fast_hashing, live_server

from ferryman.api.app import create_app
from ferryman.home_secrets import jwt_secret
from ferryman.services import auth
from ferryman.services.auth import Principal, Role
from ferryman.settings import Settings
from ferryman.store.engine import Store
from ferryman.store.tables import api_tokens, login_failures

# The operations anyone may call. Adding to this set is a security decision.
PUBLIC = {
    ("GET", "/health"),
    ("GET", "/ready"),
    ("POST", "/token"),
    ("POST", "/slack/events"),
    ("GET", "/"),  # the replaced pipeline-run API's health check
}
#: The replaced API's route answers 401 in its own shape, ``{"detail": ...}``.
OLD_SHAPE = {
    ("POST", "/{namespace}/pipelines/run/{pipeline_name}/"),
    ("POST", "/{namespace}/pipelines/run/{pipeline_name}"),
}
# Framework routes outside the schema: the schema itself and its viewers.
DOC_ROUTES = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
METHODS = ("get", "put", "post", "patch", "delete")
PASSWORD = "correct horse battery"


# -- fixtures and helpers --------------------------------------------------------


pytestmark = pytest.mark.usefixtures(fast_hashing.__name__)


@pytest.fixture
def app(settings: Settings, store: Store) -> FastAPI:
    return create_app(settings, store)


@pytest.fixture
def client(app: FastAPI) -> Iterator[httpx.Client]:
    with live_server(app) as url, httpx.Client(base_url=url, timeout=30) as c:
        yield c


@pytest.fixture
def people(store: Store) -> dict[str, dict[str, Any]]:
    """One user of each role (all with PASSWORD), with their session keys."""
    with store.write() as conn:
        made = {
            role.value: auth.create_user(conn, f"{role.value}-user", PASSWORD, role)
            for role in (Role.ADMIN, Role.OPERATOR, Role.VIEWER)
        }
        for user in made.values():
            user["session_key"] = auth.principal_for(conn, user["id"]).session_key
    return made


def principal(user: dict[str, Any]) -> Principal:
    return Principal(
        user["id"], user["username"], Role(user["role"]), "jwt", session_key=user["session_key"]
    )


def jwt_headers(settings: Settings, user: dict[str, Any]) -> dict[str, str]:
    token, _ = auth.issue_jwt(principal(user), jwt_secret(settings), settings.api.jwt_ttl_seconds)
    return bearer(token)


def as_role(settings: Settings, people: dict[str, dict[str, Any]], role: str) -> dict[str, str]:
    return jwt_headers(settings, people[role])


def b64url(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def claims_for(user: dict[str, Any], **over: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "sub": str(user["id"]),
        "sk": user["session_key"],
        "name": user["username"],
        "role": user["role"],
        "iat": now,
        "exp": now + 3600,
        "iss": "ferryman",
    }
    claims.update(over)
    return claims


def login(client: httpx.Client, username: str, password: str) -> Response:
    return client.post("/token", data={"username": username, "password": password})


def operations(app: FastAPI) -> list[tuple[str, str, dict[str, Any]]]:
    """(METHOD, path template, operation) for every operation in the schema, then
    for every API route left out of it (``include_in_schema=False``, e.g. an
    alias), so that a hidden route is walked too."""
    found = []
    for path, item in app.openapi()["paths"].items():
        for method in METHODS:
            if method in item:
                found.append((method.upper(), path, item[method]))
    known = {(m, p) for m, p, _ in found}
    for route, path, methods in served_routes(app):
        if isinstance(route, APIRoute) and path is not None:
            for method in sorted(methods - {"HEAD", "OPTIONS"}):
                if (method, path) not in known:
                    names = re.findall(r"{(\w+)(?::\w+)?}", path)
                    params = [{"name": n, "in": "path", "schema": {}} for n in names]
                    found.append((method, path, {"parameters": params, "hidden": True}))
    return found


def served_routes(app: FastAPI) -> Iterator[tuple[Any, str | None, set[str]]]:
    """(route, path, methods) for everything the app serves, included routers unrolled."""
    iter_contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    if iter_contexts is None:  # FastAPI before included routers were kept as such
        for route in app.routes:
            yield route, getattr(route, "path", None), set(getattr(route, "methods", None) or ())
        return
    for ctx in iter_contexts(app.routes):
        yield ctx.original_route, ctx.path_format, set(ctx.methods or ())


def fill_path(path: str, op: dict[str, Any], samples: dict[str, str]) -> str:
    """Put plausible values in a path template (existing ids where we have them)."""
    for p in op.get("parameters", []):
        if p.get("in") != "path":
            continue
        name = p["name"]
        kind = p.get("schema", {}).get("type")
        if kind == "integer":
            value = samples["int"]
        elif name in samples:
            value = samples[name]
        elif "token" in name:
            value = samples["token_id"]
        elif name in ("ns", "namespace"):
            value = "default"
        else:
            value = "example"
        path = path.replace("{" + name + "}", value)
    assert "{" not in path, f"unfilled path parameter in {path}"
    return path


# -- every route refuses bad credentials --------------------------------------------


BAD_CREDENTIALS = [
    "none",
    "empty_bearer",
    "basic_scheme",
    "jwt_wrong_secret",
    "jwt_tampered_payload",
    "jwt_tampered_signature",
    "jwt_expired",
    "jwt_alg_none",
    "jwt_wrong_issuer",
    "jwt_disabled_user",
    "jwt_deleted_user",
    "api_token_revoked",
    "api_token_expired",
    "api_token_wrong_secret",
    "api_token_garbage",
    "api_token_unknown",
]


def bad_credentials(
    kind: str, settings: Settings, store: Store, admin: dict[str, Any]
) -> dict[str, str]:
    """Credentials of ``kind``, all of them aimed at an admin account."""
    secret = jwt_secret(settings)
    good = jwt.encode(claims_for(admin), secret, algorithm="HS256")
    head, payload, sig = good.split(".")
    if kind == "none":
        return {}
    if kind == "empty_bearer":
        return {"Authorization": "Bearer"}
    if kind == "basic_scheme":
        return {
            "Authorization": "Basic " + base64.b64encode(f"admin-user:{PASSWORD}".encode()).decode()
        }
    if kind == "jwt_wrong_secret":
        return bearer(jwt.encode(claims_for(admin), "x" * 40, algorithm="HS256"))
    if kind == "jwt_tampered_payload":  # the payload changed, the signature did not
        forged = b64url(claims_for(admin, exp=int(time.time()) + 10**7, role="admin"))
        return bearer(f"{head}.{forged}.{sig}")
    if kind == "jwt_tampered_signature":
        # A middle character: the last one carries padding bits that may not count.
        flipped = sig[:10] + ("A" if sig[10] != "A" else "B") + sig[11:]
        return bearer(f"{head}.{payload}.{flipped}")
    if kind == "jwt_expired":
        past = int(time.time()) - 120
        return bearer(jwt.encode(claims_for(admin, iat=past - 3600, exp=past), secret, "HS256"))
    if kind == "jwt_alg_none":
        return bearer(f"{b64url({'alg': 'none', 'typ': 'JWT'})}.{payload}.")
    if kind == "jwt_wrong_issuer":
        return bearer(jwt.encode(claims_for(admin, iss="someone-else"), secret, "HS256"))
    if kind in ("jwt_disabled_user", "jwt_deleted_user"):
        with store.write() as conn:  # a valid token first, then its user goes
            other = auth.create_user(conn, f"gone-{kind[4:8]}", None, Role.ADMIN)
            headers = bearer(auth.issue_jwt(auth.principal_for(conn, other["id"]), secret, 3600)[0])
            if kind == "jwt_disabled_user":
                auth.update_user(conn, other["id"], disabled=True)
            else:
                auth.delete_user(conn, other["id"])
        return headers
    if kind.startswith("api_token"):
        with store.write() as conn:
            record, token = auth.create_api_token(conn, admin["id"], kind)
            if kind == "api_token_revoked":
                auth.revoke_api_token(conn, record["id"])
            elif kind == "api_token_expired":
                past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
                conn.execute(
                    sa.update(api_tokens)
                    .where(api_tokens.c.id == record["id"])
                    .values(expires_at=past)
                )
        if kind == "api_token_wrong_secret":
            return bearer(token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"))
        if kind == "api_token_garbage":
            return bearer("fm_not a token; at all!")
        if kind == "api_token_unknown":
            return bearer(f"fm_0123456789ab_{'x' * 43}")
        return bearer(token)
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", BAD_CREDENTIALS)
def test_every_route_refuses_bad_credentials(
    kind: str,
    app: FastAPI,
    client: httpx.Client,
    settings: Settings,
    store: Store,
    people: dict[str, dict[str, Any]],
) -> None:
    admin = people["admin"]
    headers = bad_credentials(kind, settings, store, admin)
    with store.write() as conn:
        record, _ = auth.create_api_token(conn, admin["id"], "sample")
    samples = {"int": str(admin["id"]), "token_id": record["id"]}
    checked, wrong = 0, []
    for method, path, op in operations(app):
        if (method, path) in PUBLIC:
            continue
        url = fill_path(path, op, samples)
        r = client.request(method, url, headers=headers)
        checked += 1
        try:
            if (method, path) in OLD_SHAPE:
                assert r.status_code == 401 and isinstance(r.json()["detail"], str)
            else:
                assert_error(r, 401, "unauthorized")
            assert r.headers.get("www-authenticate", "").startswith("Bearer")
        except (AssertionError, ValueError, KeyError) as exc:
            wrong.append(f"{method} {url}: {r.status_code} {r.text[:200]} ({exc})")
    assert checked >= 9, f"only {checked} protected operations found"  # users, tokens, /me
    assert not wrong, f"{len(wrong)} of {checked} operations did not refuse {kind}:\n" + "\n".join(
        wrong
    )


def test_only_the_known_routes_are_public(app: FastAPI, client: httpx.Client) -> None:
    """Operations without a security requirement are exactly the public ones we know."""
    unsecured = {
        (m, p) for m, p, op in operations(app) if not op.get("security") and not op.get("hidden")
    }
    assert unsecured <= PUBLIC, f"unexpected public operations: {sorted(unsecured - PUBLIC)}"
    assert {("GET", "/health"), ("GET", "/ready"), ("POST", "/token")} <= unsecured
    assert client.get("/health").status_code == 200
    assert client.get("/ready").status_code == 200
    assert_error(login(client, "nobody", "whatever-password"), 401)


def test_nothing_is_served_outside_the_walk(app: FastAPI) -> None:
    """The walk sees API routes (in the schema or not); anything else — a mount,
    a plain route — would escape it, so it must be one of the documentation pages."""
    api_routes, other = 0, []
    for route, path, _ in served_routes(app):
        if isinstance(route, APIRoute):
            api_routes += 1
        elif not (isinstance(route, Route) and path in DOC_ROUTES):
            other.append(f"{type(route).__name__} {path}")
    assert api_routes >= 9
    assert not other, f"served outside the API routes, unchecked for auth: {other}"


def test_a_valid_admin_token_passes_authentication_everywhere(
    app: FastAPI,
    client: httpx.Client,
    settings: Settings,
    store: Store,
    people: dict[str, dict[str, Any]],
) -> None:
    """The control for the walk: the credentials it breaks did work."""
    admin = people["admin"]
    with store.write() as conn:
        record, token = auth.create_api_token(conn, admin["id"], "sample")
    samples = {"int": str(people["viewer"]["id"]), "token_id": record["id"]}
    for headers in (jwt_headers(settings, admin), bearer(token)):
        for method, path, op in operations(app):
            if (method, path) in PUBLIC or method == "DELETE":
                continue
            r = client.request(method, fill_path(path, op, samples), headers=headers)
            assert r.status_code not in (401, 403), f"{method} {path}: {r.text}"


# -- roles -----------------------------------------------------------------------------


def test_viewer_cannot_create_or_cancel_runs(
    client: httpx.Client, settings: Settings, people: dict[str, dict[str, Any]]
) -> None:
    viewer = as_role(settings, people, "viewer")
    # Neither the pipeline nor the run exists: the role is checked first (403, not 404).
    r = client.post("/namespaces/default/pipelines/hello/runs", json={"params": {}}, headers=viewer)
    assert_error(r, 403, "forbidden")
    assert_error(client.post("/runs/0123456789abcdef/cancel", headers=viewer), 403, "forbidden")


def test_operator_passes_the_role_check_for_runs(
    client: httpx.Client, settings: Settings, people: dict[str, dict[str, Any]]
) -> None:
    operator = as_role(settings, people, "operator")
    r = client.post("/runs/0123456789abcdef/cancel", headers=operator)
    assert r.status_code not in (401, 403), r.text
    r = client.post(
        "/namespaces/default/pipelines/hello/runs", json={"params": {}}, headers=operator
    )
    assert r.status_code not in (401, 403), r.text


@pytest.mark.parametrize("role", ["operator", "viewer"])
def test_only_admins_manage_users(
    role: str, client: httpx.Client, settings: Settings, people: dict[str, dict[str, Any]]
) -> None:
    headers = as_role(settings, people, role)
    other = people["viewer"]["id"]
    missing = 999_999  # a user that does not exist: still 403, never 404
    calls: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", "/users", None),
        ("POST", "/users", {"username": "mallory", "password": PASSWORD, "role": "admin"}),
        ("GET", f"/users/{other}", None),
        ("GET", f"/users/{missing}", None),
        ("PATCH", f"/users/{people[role]['id']}", {"role": "admin"}),  # promote oneself
        ("PATCH", f"/users/{missing}", {"role": "admin"}),
        ("DELETE", f"/users/{other}", None),
        ("DELETE", f"/users/{missing}", None),
    ]
    for method, url, body in calls:
        r = client.request(method, url, json=body, headers=headers)
        err = assert_error(r, 403, "forbidden")
        assert role in err["message"] and "admin" in err["message"]
    admin = as_role(settings, people, "admin")
    assert client.get(f"/users/{people[role]['id']}", headers=admin).json()["role"] == role
    assert "mallory" not in {u["username"] for u in client.get("/users", headers=admin).json()}


@pytest.mark.parametrize("role", ["operator", "viewer"])
def test_only_admins_create_tokens(
    role: str, client: httpx.Client, settings: Settings, people: dict[str, dict[str, Any]]
) -> None:
    headers = as_role(settings, people, role)
    assert_error(client.post("/tokens", json={"name": "mine"}, headers=headers), 403)
    body = {"name": "theirs", "user_id": people["admin"]["id"]}
    assert_error(client.post("/tokens", json=body, headers=headers), 403)
    assert client.get("/tokens", headers=headers).json() == []


# -- login -------------------------------------------------------------------------------


def test_login_gives_a_jwt_that_works(
    client: httpx.Client, people: dict[str, dict[str, Any]], settings: Settings
) -> None:
    r = login(client, "operator-user", PASSWORD)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == settings.api.jwt_ttl_seconds
    me = client.get("/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200
    assert me.json() == {
        "id": people["operator"]["id"],
        "username": "operator-user",
        "role": "operator",
        "via": "jwt",
    }
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["exp"] - int(claims["iat"]) == settings.api.jwt_ttl_seconds


def test_a_password_change_revokes_earlier_access_tokens(
    client: httpx.Client, people: dict[str, dict[str, Any]], settings: Settings
) -> None:
    old = bearer(login(client, "operator-user", PASSWORD).json()["access_token"])
    assert client.get("/me", headers=old).status_code == 200
    admin = as_role(settings, people, "admin")
    uid = people["operator"]["id"]
    r = client.patch(f"/users/{uid}", json={"password": "a brand new passphrase"}, headers=admin)
    assert r.status_code == 200, r.text
    body = assert_error(client.get("/me", headers=old), 401)
    assert "password changed" in body["message"]
    assert login(client, "operator-user", PASSWORD).status_code == 401
    new = bearer(login(client, "operator-user", "a brand new passphrase").json()["access_token"])
    assert client.get("/me", headers=new).status_code == 200
    # a role change alone does not log anybody out
    assert client.patch(f"/users/{uid}", json={"role": "viewer"}, headers=admin).status_code == 200
    me = client.get("/me", headers=new)
    assert me.status_code == 200 and me.json()["role"] == "viewer"


def test_wrong_password_and_unknown_user_look_the_same(
    client: httpx.Client, store: Store, people: dict[str, dict[str, Any]]
) -> None:
    with store.write() as conn:
        auth.create_user(conn, "tokens-only", None, Role.VIEWER)
        disabled = auth.create_user(conn, "disabled-user", PASSWORD, Role.VIEWER)
        auth.update_user(conn, disabled["id"], disabled=True)
    attempts = [
        login(client, "viewer-user", "wrong password"),
        login(client, "no-such-user", "wrong password"),
        login(client, "tokens-only", "any password"),
        login(client, "disabled-user", PASSWORD),
        login(client, "not a valid \x00 name", PASSWORD),
    ]
    bodies = [assert_error(r, 401, "unauthorized") for r in attempts]
    assert all(b == bodies[0] for b in bodies), bodies
    assert all(r.headers["www-authenticate"] == "Bearer" for r in attempts)
    assert bodies[0]["message"] == "wrong username or password"


def test_five_failures_lock_the_account(
    client: httpx.Client, store: Store, settings: Settings, people: dict[str, dict[str, Any]]
) -> None:
    """(From this client's address: see test_login_lockout.py for the rest.)"""
    for _ in range(settings.login.max_failures):
        assert_error(login(client, "viewer-user", "wrong password"), 401)
    # Locked: even the right password is refused, with a hint when to come back.
    for password in ("wrong password", PASSWORD):
        r = login(client, "viewer-user", password)
        err = assert_error(r, 429, "too_many_requests")
        wait = int(r.headers["retry-after"])
        assert 0 < wait <= settings.login.lock_seconds
        assert err["details"] == {"retry_after": wait}
    # Someone else is not affected.
    assert login(client, "operator-user", PASSWORD).status_code == 200
    # Once the lock has passed, the right password works again.
    with store.write() as conn:
        conn.execute(
            sa.update(login_failures)
            .where(login_failures.c.username == "viewer-user")
            .values(locked_until=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
        )
    assert login(client, "viewer-user", PASSWORD).status_code == 200


def test_a_success_resets_the_failure_count(
    client: httpx.Client, settings: Settings, people: dict[str, dict[str, Any]]
) -> None:
    for _ in range(settings.login.max_failures - 1):
        assert_error(login(client, "viewer-user", "wrong password"), 401)
    assert login(client, "viewer-user", PASSWORD).status_code == 200
    for _ in range(settings.login.max_failures - 1):
        assert_error(login(client, "viewer-user", "wrong password"), 401)
    assert login(client, "viewer-user", PASSWORD).status_code == 200


# -- API tokens -----------------------------------------------------------------------------


def test_api_token_lifecycle(
    client: httpx.Client, settings: Settings, store: Store, people: dict[str, dict[str, Any]]
) -> None:
    admin = as_role(settings, people, "admin")
    viewer_id = people["viewer"]["id"]
    r = client.post(
        "/tokens", json={"name": "ci deploy", "user_id": viewer_id, "expires_in_days": 30},
        headers=admin,
    )  # fmt: skip
    assert r.status_code == 201, r.text
    created = r.json()
    token = created.pop("token")
    assert token.startswith(f"fm_{created['id']}_")
    assert created["user_id"] == viewer_id and created["username"] == "viewer-user"
    assert created["name"] == "ci deploy" and created["revoked"] is False
    assert created["expires_at"] is not None and created["last_used_at"] is None
    secret = token.removeprefix(f"fm_{created['id']}_")  # may itself contain "_"
    assert len(secret) >= 40

    # Stored hashed: the secret is nowhere in the database row.
    with store.read() as conn:
        row = conn.execute(sa.select(api_tokens).where(api_tokens.c.id == created["id"])).one()
    assert secret not in json.dumps(row._asdict(), default=str)

    # Used: the token acts as its user.
    me = client.get("/me", headers=bearer(token))
    assert me.status_code == 200, me.text
    assert me.json()["username"] == "viewer-user" and me.json()["via"] == "api_token"

    # Listed, never with the secret or the hash; last use recorded.
    for headers, who in ((admin, "admin"), (bearer(token), "owner")):
        r = client.get("/tokens", headers=headers)
        assert r.status_code == 200, r.text
        assert [t["id"] for t in r.json()] == [created["id"]], who
        assert secret not in r.text and row.token_hash not in r.text
        assert set(r.json()[0]) == set(created), "no token or hash field in listings"
        assert r.json()[0]["last_used_at"] is not None
    got = client.get(f"/tokens/{created['id']}", headers=admin).json()
    assert got["id"] == created["id"] and "token" not in got

    # Revoked: 401 at once.
    r = client.delete(f"/tokens/{created['id']}", headers=admin)
    assert r.status_code == 200 and r.json()["revoked"] is True
    err = assert_error(client.get("/me", headers=bearer(token)), 401)
    assert "revoked" in err["message"]
    # Revoking again is harmless.
    assert client.delete(f"/tokens/{created['id']}", headers=admin).json()["revoked"] is True


def test_expired_api_token_is_refused(
    client: httpx.Client, settings: Settings, store: Store, people: dict[str, dict[str, Any]]
) -> None:
    admin = as_role(settings, people, "admin")
    r = client.post("/tokens", json={"name": "short", "expires_in_days": 1}, headers=admin)
    assert r.status_code == 201, r.text
    token, tid = r.json()["token"], r.json()["id"]
    assert client.get("/me", headers=bearer(token)).status_code == 200
    with store.write() as conn:
        conn.execute(
            sa.update(api_tokens)
            .where(api_tokens.c.id == tid)
            .values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
        )
    err = assert_error(client.get("/me", headers=bearer(token)), 401)
    assert "expired" in err["message"]


def test_tokens_are_private_to_their_owner(
    client: httpx.Client, settings: Settings, people: dict[str, dict[str, Any]]
) -> None:
    admin = as_role(settings, people, "admin")
    made = {}
    for role in ("admin", "operator", "viewer"):
        r = client.post(
            "/tokens", json={"name": f"{role}-bot", "user_id": people[role]["id"]}, headers=admin
        )
        assert r.status_code == 201, r.text
        made[role] = r.json()
    assert {t["name"] for t in client.get("/tokens", headers=admin).json()} == {
        "admin-bot", "operator-bot", "viewer-bot"
    }  # fmt: skip
    op_id = people["operator"]["id"]
    assert [t["user_id"] for t in client.get(f"/tokens?user_id={op_id}", headers=admin).json()] == [
        op_id
    ]
    viewer = as_role(settings, people, "viewer")
    assert [t["name"] for t in client.get("/tokens", headers=viewer).json()] == ["viewer-bot"]
    assert_error(client.get(f"/tokens?user_id={op_id}", headers=viewer), 403)
    # Someone else's token looks like no token at all.
    for method in ("GET", "DELETE"):
        r = client.request(method, f"/tokens/{made['operator']['id']}", headers=viewer)
        assert_error(r, 404, "not_found")
        assert_error(client.request(method, "/tokens/ffffffffffff", headers=viewer), 404)
    assert client.get(f"/tokens/{made['operator']['id']}", headers=admin).json()["revoked"] is False
    # One's own can be revoked without being admin.
    r = client.delete(f"/tokens/{made['viewer']['id']}", headers=viewer)
    assert r.status_code == 200 and r.json()["revoked"] is True
    assert_error(client.get("/me", headers=bearer(made["viewer"]["token"])), 401)
    assert client.get("/me", headers=bearer(made["operator"]["token"])).status_code == 200


def test_token_creation_input_errors(
    client: httpx.Client, settings: Settings, people: dict[str, dict[str, Any]]
) -> None:
    admin = as_role(settings, people, "admin")
    assert_error(client.post("/tokens", json={"name": "x", "user_id": 999_999}, headers=admin), 404)
    for body in (
        {},
        {"name": ""},
        {"name": "x" * 129},
        {"name": "tab\there"},
        {"name": "x", "expires_in_days": 0},
        {"name": "x", "expires_in_days": auth.MAX_TOKEN_DAYS + 1},
        {"name": "x", "user_id": 2**40},
        {"name": "x", "secret": "chosen"},
    ):
        err = assert_error(client.post("/tokens", json=body, headers=admin), 422, "invalid")
        assert err["details"], body


def test_deleting_a_user_revokes_their_tokens(
    client: httpx.Client, settings: Settings, people: dict[str, dict[str, Any]]
) -> None:
    admin = as_role(settings, people, "admin")
    r = client.post("/tokens", json={"name": "bot", "user_id": people["viewer"]["id"]},
                    headers=admin)  # fmt: skip
    token = r.json()["token"]
    assert client.get("/me", headers=bearer(token)).status_code == 200
    assert client.delete(f"/users/{people['viewer']['id']}", headers=admin).status_code == 204
    assert_error(client.get("/me", headers=bearer(token)), 401)
    assert client.get("/tokens", headers=admin).json() == []


# -- users -----------------------------------------------------------------------------------


def test_user_crud(
    client: httpx.Client, settings: Settings, people: dict[str, dict[str, Any]]
) -> None:
    admin = as_role(settings, people, "admin")
    r = client.post(
        "/users",
        json={"username": "dana", "password": PASSWORD, "role": "operator", "slack_user_id": "U1D"},
        headers=admin,
    )
    assert r.status_code == 201, r.text
    dana = r.json()
    assert set(dana) == {"id", "username", "role", "slack_user_id", "disabled", "created_at"}
    assert (dana["username"], dana["role"], dana["slack_user_id"], dana["disabled"]) == (
        "dana", "operator", "U1D", False
    )  # fmt: skip
    assert PASSWORD not in r.text and "argon2" not in r.text
    assert login(client, "dana", PASSWORD).status_code == 200

    names = [u["username"] for u in client.get("/users", headers=admin).json()]
    assert names == ["admin-user", "operator-user", "viewer-user", "dana"]
    assert client.get(f"/users/{dana['id']}", headers=admin).json() == dana

    r = client.patch(
        f"/users/{dana['id']}",
        json={"role": "viewer", "password": "another password", "slack_user_id": None},
        headers=admin,
    )
    assert r.status_code == 200, r.text
    assert (r.json()["role"], r.json()["slack_user_id"]) == ("viewer", None)
    assert_error(login(client, "dana", PASSWORD), 401)
    dana_jwt = bearer(login(client, "dana", "another password").json()["access_token"])
    assert client.get("/me", headers=dana_jwt).json()["role"] == "viewer"

    # An empty change changes nothing; disabling cuts the user's access at once.
    assert client.patch(f"/users/{dana['id']}", json={}, headers=admin).json()["role"] == "viewer"
    r = client.patch(f"/users/{dana['id']}", json={"disabled": True}, headers=admin)
    assert r.json()["disabled"] is True
    assert_error(client.get("/me", headers=dana_jwt), 401)
    assert_error(login(client, "dana", "another password"), 401)

    assert client.delete(f"/users/{dana['id']}", headers=admin).status_code == 204
    assert_error(client.get(f"/users/{dana['id']}", headers=admin), 404, "not_found")
    assert_error(client.delete(f"/users/{dana['id']}", headers=admin), 404)
    assert_error(client.patch(f"/users/{dana['id']}", json={}, headers=admin), 404)


def test_user_input_errors_and_conflicts(
    client: httpx.Client, settings: Settings, people: dict[str, dict[str, Any]]
) -> None:
    admin = as_role(settings, people, "admin")
    body = {"username": "erin", "role": "viewer", "slack_user_id": "U0ERIN"}
    assert client.post("/users", json=body, headers=admin).status_code == 201
    err = assert_error(client.post("/users", json=body, headers=admin), 409, "conflict")
    assert "erin" in err["message"]
    other = {"username": "frank", "role": "viewer", "slack_user_id": "U0ERIN"}
    err = assert_error(client.post("/users", json=other, headers=admin), 409, "conflict")
    assert "U0ERIN" in err["message"]
    viewer_id = people["viewer"]["id"]
    r = client.patch(f"/users/{viewer_id}", json={"slack_user_id": "U0ERIN"}, headers=admin)
    assert_error(r, 409)
    for bad, field in (
        ({"username": "", "role": "viewer"}, "username"),
        ({"username": "has space", "role": "viewer"}, "username"),
        ({"username": "x" * 129, "role": "viewer"}, "username"),
        ({"username": "gina", "role": "root"}, "role"),
        ({"username": "gina"}, "role"),
        ({"username": "gina", "role": "viewer", "password": "short"}, "password"),
        ({"username": "gina", "role": "viewer", "password": "p" * 1025}, "password"),
        ({"username": "gina", "role": "viewer", "slack_user_id": "U\x00"}, "slack_user_id"),
        ({"username": "gina", "role": "viewer", "is_admin": True}, "is_admin"),
    ):
        err = assert_error(client.post("/users", json=bad, headers=admin), 422, "invalid")
        assert field in {d["path"] for d in err["details"]}, err
    for url in ("/users/0", "/users/abc", f"/users/{2**31}"):
        assert_error(client.get(url, headers=admin), 422)
    r = client.post("/users", content=b"{not json", headers=admin)
    assert_error(r, 422)


def test_the_last_enabled_admin_stays(
    client: httpx.Client, settings: Settings, store: Store, people: dict[str, dict[str, Any]]
) -> None:
    admin = as_role(settings, people, "admin")
    me = people["admin"]["id"]
    for method, body in (
        ("DELETE", None),
        ("PATCH", {"role": "operator"}),
        ("PATCH", {"role": "viewer"}),
        ("PATCH", {"disabled": True}),
    ):
        r = client.request(method, f"/users/{me}", json=body, headers=admin)
        err = assert_error(r, 409, "conflict")
        assert "last enabled admin" in err["message"]
    # A disabled second admin does not count.
    r = client.post("/users", json={"username": "root2", "role": "admin"}, headers=admin)
    second = r.json()["id"]
    client.patch(f"/users/{second}", json={"disabled": True}, headers=admin)
    assert_error(client.patch(f"/users/{me}", json={"role": "viewer"}, headers=admin), 409)
    # With another enabled admin, stepping down is fine.
    assert client.patch(f"/users/{second}", json={"disabled": False}, headers=admin).is_success
    r = client.patch(f"/users/{me}", json={"role": "operator"}, headers=admin)
    assert r.status_code == 200 and r.json()["role"] == "operator"
    # The change applies at once: the same JWT is no longer an admin's.
    assert_error(client.get("/users", headers=admin), 403)
    with store.read() as conn:
        admins = [u for u in auth.list_users(conn) if u["role"] == "admin" and not u["disabled"]]
    assert [u["id"] for u in admins] == [second]

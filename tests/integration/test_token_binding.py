"""Access tokens stay bound to the user they were issued to (issue 11, items 3
and 10), on SQLite and PostgreSQL, over real HTTP.

- A user id is never reused: a deleted user's JWT does not log in as the
  next user created (on SQLite that used to be the same id — an admin here).
- Every JWT carries the user's session key and every API token the user's
  permanent random id: even a row that took a deleted user's id (restored
  from a backup, say) is somebody else.
- Disabling a user ends their JWTs for good: enabling them again does not
  revive tokens issued before.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from tests.api_support import assert_error, bearer, fast_hashing, live_server

from ferryman.api.app import create_app
from ferryman.services import auth
from ferryman.services.auth import Role
from ferryman.settings import Settings
from ferryman.store.engine import Store
from ferryman.store.tables import users, utcnow

pytestmark = pytest.mark.usefixtures(fast_hashing.__name__)

PASSWORD = "correct horse battery"


@pytest.fixture
def client(settings: Settings, store: Store) -> Iterator[httpx.Client]:
    app: FastAPI = create_app(settings, store)
    with live_server(app) as url, httpx.Client(base_url=url, timeout=30) as c:
        yield c


@pytest.fixture
def admin(client: httpx.Client, store: Store) -> dict[str, str]:
    with store.write() as conn:
        auth.create_user(conn, "root", PASSWORD, Role.ADMIN)
    return bearer(login(client, "root", PASSWORD))


def login(client: httpx.Client, username: str, password: str) -> str:
    r = client.post("/token", data={"username": username, "password": password})
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def test_a_deleted_users_jwt_does_not_log_in_as_the_next_user(
    client: httpx.Client, admin: dict[str, str]
) -> None:
    r = client.post("/users", json={"username": "vic", "password": PASSWORD, "role": "viewer"},
                    headers=admin)  # fmt: skip
    assert r.status_code == 201, r.text
    vic_id = r.json()["id"]
    vic = bearer(login(client, "vic", PASSWORD))
    assert client.get("/me", headers=vic).json()["username"] == "vic"
    assert client.delete(f"/users/{vic_id}", headers=admin).status_code == 204

    r = client.post("/users", json={"username": "eve", "password": PASSWORD, "role": "admin"},
                    headers=admin)  # fmt: skip
    assert r.status_code == 201, r.text
    assert r.json()["id"] != vic_id, "a user id was reused"
    assert_error(client.get("/users", headers=vic), 401, "unauthorized")
    assert_error(client.get("/me", headers=vic), 401, "unauthorized")


def test_a_jwt_is_refused_by_a_row_that_took_its_users_id(
    client: httpx.Client, admin: dict[str, str], store: Store
) -> None:
    """Ids are not reused; should a row still take a deleted user's id (a
    restore, a hand-made insert), that row's user is somebody else."""
    with store.write() as conn:
        vic = auth.create_user(conn, "vic", PASSWORD, Role.VIEWER)
    jwt_token = bearer(login(client, "vic", PASSWORD))
    with store.write() as conn:
        _, api_token = auth.create_api_token(conn, vic["id"], "vic's bot")
    assert client.get("/me", headers=jwt_token).status_code == 200
    assert client.get("/me", headers=bearer(api_token)).status_code == 200
    with store.write() as conn:  # vic is replaced, in place, by an admin with the same id
        now = utcnow()
        conn.execute(
            sa.update(users)
            .where(users.c.id == vic["id"])
            .values(
                username="mallory", role="admin", created_at=now, updated_at=now,
                **auth.new_user_keys(),
            )
        )  # fmt: skip
    assert_error(client.get("/users", headers=jwt_token), 401)
    assert_error(client.get("/users", headers=bearer(api_token)), 401)


def test_enabling_a_user_again_does_not_revive_earlier_jwts(
    client: httpx.Client, admin: dict[str, str], store: Store
) -> None:
    with store.write() as conn:
        vic = auth.create_user(conn, "vic", PASSWORD, Role.OPERATOR)
    old = bearer(login(client, "vic", PASSWORD))
    with store.write() as conn:
        _, api_token = auth.create_api_token(conn, vic["id"], "vic's bot")
    assert client.get("/me", headers=old).status_code == 200
    r = client.patch(f"/users/{vic['id']}", json={"disabled": True}, headers=admin)
    assert r.status_code == 200 and r.json()["disabled"] is True
    assert_error(client.get("/me", headers=old), 401)
    assert_error(client.get("/me", headers=bearer(api_token)), 401)
    assert client.patch(f"/users/{vic['id']}", json={"disabled": False}, headers=admin).is_success

    assert_error(client.get("/me", headers=old), 401)  # the session ended with the disable
    new = bearer(login(client, "vic", PASSWORD))
    assert client.get("/me", headers=new).json()["username"] == "vic"
    # API tokens are credentials of their own (listed, revocable): they are
    # refused while the user is disabled and work again afterwards.
    assert client.get("/me", headers=bearer(api_token)).status_code == 200
    # Other changes (role, Slack id) do not end sessions.
    r = client.patch(f"/users/{vic['id']}", json={"role": "viewer"}, headers=admin)
    assert r.status_code == 200
    assert client.get("/me", headers=new).json()["role"] == "viewer"


def test_ids_are_never_reused_at_the_store_level(store: Store) -> None:
    """Even the highest id, deleted, is not handed out again (SQLite
    AUTOINCREMENT; PostgreSQL sequences never go back)."""
    with store.write() as conn:
        a = auth.create_user(conn, "a", None, Role.ADMIN)
        b = auth.create_user(conn, "b", None, Role.ADMIN)
        auth.delete_user(conn, b["id"])
        c = auth.create_user(conn, "c", None, Role.VIEWER)
    assert c["id"] > b["id"] > a["id"]

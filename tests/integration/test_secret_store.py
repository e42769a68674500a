"""ferryman's secret store through the REST API and the CLI (local and
``--server``): admins only, values go in and never come out."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from tests.api_support import assert_error, bearer, fast_hashing, live_server
from tests.cli_support import cli_environment, ferryman

from ferryman.api.app import create_app
from ferryman.home_secrets import jwt_secret
from ferryman.services import auth
from ferryman.services.auth import Role
from ferryman.settings import Settings
from ferryman.store.engine import Store
from ferryman.store.tables import stored_secrets

VALUE = "sk-live-value-93f1c0a7e4"
pytestmark = pytest.mark.usefixtures(fast_hashing.__name__)


@pytest.fixture
def app(settings: Settings, store: Store) -> FastAPI:
    return create_app(settings, store)


@pytest.fixture
def url(app: FastAPI) -> Iterator[str]:
    with live_server(app) as u:
        yield u


def headers_of(settings: Settings, store: Store, role: Role) -> dict[str, str]:
    with store.write() as conn:
        user = auth.create_user(conn, f"{role.value}-1", "pw-0123456789-abc", role)
        p = auth.principal_for(conn, user["id"])
    token, _ = auth.issue_jwt(p, jwt_secret(settings), 600)
    return bearer(token)


def test_admins_set_list_and_remove_and_never_see_a_value(
    settings: Settings, store: Store, url: str
) -> None:
    admin = headers_of(settings, store, Role.ADMIN)
    seen: list[str] = []
    with httpx.Client(base_url=url, headers=admin, timeout=30) as c:
        r = c.put("/secrets/CAST_API_KEY", json={"value": VALUE})
        assert r.status_code == 201, r.text
        seen.append(r.text)
        assert r.json()["name"] == "CAST_API_KEY" and r.json()["created"] is True
        assert r.json()["updated_by"] == "admin-1"
        r = c.put("/secrets/CAST_API_KEY", json={"value": VALUE + "-2"})
        assert r.status_code == 200 and r.json()["created"] is False
        seen.append(r.text)
        r = c.get("/secrets")
        seen.append(r.text)
        assert [i["name"] for i in r.json()["items"]] == ["CAST_API_KEY"]
        assert set(r.json()["items"][0]) == {
            "name", "created_at", "updated_at", "updated_by", "created"
        }  # fmt: skip
        seen.append(c.get("/openapi.json").text)
        assert c.delete("/secrets/CAST_API_KEY").status_code == 204
        assert_error(c.delete("/secrets/CAST_API_KEY"), 404)
        assert c.get("/secrets").json() == {"items": []}
    assert all(VALUE not in text for text in seen)


def test_stored_sealed(settings: Settings, store: Store, url: str) -> None:
    admin = headers_of(settings, store, Role.ADMIN)
    with httpx.Client(base_url=url, headers=admin, timeout=30) as c:
        assert c.put("/secrets/CAST_API_KEY", json={"value": VALUE}).status_code == 201
    with store.read() as conn:
        raw = conn.execute(sa.text("SELECT value FROM stored_secrets")).scalar_one()
        opened = conn.execute(sa.select(stored_secrets.c.value)).scalar_one()
    assert raw.startswith("fmbox1:") and VALUE not in raw and opened == VALUE


@pytest.mark.parametrize(
    ("name", "body", "reason"),
    [
        ("FERRYMAN_SECRET_KEY", {"value": "x"}, "reserved"),
        ("ferryman_jwt", {"value": "x"}, "reserved"),
        ("bad-name", {"value": "x"}, "invalid secret name"),
        ("OK_NAME", {"value": ""}, "must not be empty"),
        ("OK_NAME", {"value": "a\u0000b"}, None),
        ("OK_NAME", {"value": 42}, None),
        ("OK_NAME", {"value": "x", "extra": 1}, None),
    ],
)
def test_bad_input_is_a_clear_4xx(
    settings: Settings, store: Store, url: str, name: str, body: dict[str, Any], reason: str | None
) -> None:
    admin = headers_of(settings, store, Role.ADMIN)
    with httpx.Client(base_url=url, headers=admin, timeout=30) as c:
        r = c.put(f"/secrets/{name}", json=body)
    assert 400 <= r.status_code < 500 and "Traceback" not in r.text, r.text
    if reason:
        assert reason in r.json()["error"]["message"]
    if isinstance(body.get("value"), str) and len(body["value"]) > 2:
        assert body["value"] not in r.text


def test_only_admins(settings: Settings, store: Store, url: str) -> None:
    for role in (Role.OPERATOR, Role.VIEWER):
        h = headers_of(settings, store, role)
        with httpx.Client(base_url=url, headers=h, timeout=30) as c:
            assert_error(c.get("/secrets"), 403)
            assert_error(c.put("/secrets/CAST_API_KEY", json={"value": VALUE}), 403)
            assert_error(c.delete("/secrets/CAST_API_KEY"), 403)
    with httpx.Client(base_url=url, timeout=30) as c:
        assert_error(c.get("/secrets"), 401)


@pytest.mark.timeout(300)  # several CLI processes: slow on a loaded machine
def test_cli_sets_from_stdin_file_and_env_and_never_prints_a_value(
    settings: Settings, store: Store, db_url: str, tmp_path: Path
) -> None:
    env = cli_environment(settings.home, db_url)
    r = ferryman(env, "secrets", "set", "CAST_API_KEY", stdin=VALUE + "\n")
    assert r.returncode == 0 and "created" in r.stdout, r.stderr
    with store.read() as conn:
        assert conn.execute(sa.select(stored_secrets.c.value)).scalar_one() == VALUE
    (tmp_path / "v").write_text("from-file-value-1\n")
    r = ferryman(env, "secrets", "set", "FROM_FILE", "--from-file", str(tmp_path / "v"))
    assert r.returncode == 0, r.stderr
    r = ferryman({**env, "V": "from-env-value-2"}, "secrets", "set", "FROM_ENV", "--from-env", "V")
    assert r.returncode == 0, r.stderr
    r = ferryman(env, "secrets", "ls")
    assert "CAST_API_KEY" in r.stdout and "(local)" in r.stdout and VALUE not in r.stdout
    r = ferryman(env, "secrets", "ls", "--json")
    assert "from-file-value-1" not in r.stdout and "from-env-value-2" not in r.stdout
    assert [i["name"] for i in json.loads(r.stdout)] == ["CAST_API_KEY", "FROM_ENV", "FROM_FILE"]


@pytest.mark.timeout(300)
def test_cli_mistakes_exit_2_with_one_line(settings: Settings, db_url: str) -> None:
    env = cli_environment(settings.home, db_url)
    for args, stdin, says in (
        (("set", "FERRYMAN_SECRET_KEY"), "x", "reserved"),
        (("set", "EMPTY"), "", "must not be empty"),
        (("rm", "NOPE"), None, "no stored secret named 'NOPE'"),
    ):
        r = ferryman(env, "secrets", *args, stdin=stdin)
        assert r.returncode == 2 and says in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.timeout(300)
def test_cli_through_a_server(settings: Settings, store: Store, url: str, db_url: str) -> None:
    env = cli_environment(settings.home, db_url)
    token = headers_of(settings, store, Role.ADMIN)["Authorization"].split()[1]
    remote = {**env, "FERRYMAN_TOKEN": token}
    r = ferryman(remote, "secrets", "set", "REMOTE_ONE", "--server", url, stdin="remote-v-123")
    assert r.returncode == 0 and "created" in r.stdout, r.stderr
    r = ferryman(remote, "secrets", "ls", "--server", url)
    assert "REMOTE_ONE" in r.stdout and "admin-1" in r.stdout and "remote-v-123" not in r.stdout
    r = ferryman(remote, "secrets", "rm", "REMOTE_ONE", "--server", url)
    assert r.returncode == 0, r.stderr
    with store.read() as conn:
        assert conn.execute(sa.select(stored_secrets.c.name)).all() == []

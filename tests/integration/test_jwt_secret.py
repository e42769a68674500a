"""The secret that signs access tokens (issue 11, item 2).

There is no built-in secret any more: without ``FERRYMAN_JWT_SECRET`` each
home gets a random one on first use (``FERRYMAN_HOME/jwt_secret``, mode 0600),
which every process on that home reads. A token signed with the old public
development value is worth nothing. In production the secret must be set and
strong.
"""

from __future__ import annotations

import secrets
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from tests.api_support import assert_error, bearer, fast_hashing, live_server

from ferryman import home_secrets
from ferryman.api.app import create_app
from ferryman.services import auth
from ferryman.services.auth import Role
from ferryman.settings import Settings
from ferryman.store.engine import Store

pytestmark = pytest.mark.usefixtures(fast_hashing.__name__)

PUBLIC_SECRET = "ferryman-development-secret-change-me"  # the old built-in default


@pytest.fixture
def client(settings: Settings, store: Store) -> Iterator[httpx.Client]:
    with live_server(create_app(settings, store)) as url, httpx.Client(base_url=url) as c:
        yield c


def forged(secret: str, user: dict[str, object]) -> dict[str, str]:
    now = int(time.time())
    claims = {"sub": str(user["id"]), "name": user["username"], "role": "admin",
              "iat": now, "exp": now + 3600, "iss": "ferryman"}  # fmt: skip
    return bearer(jwt.encode(claims, secret, algorithm="HS256"))


def test_a_token_signed_with_the_public_secret_is_refused(
    client: httpx.Client, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FERRYMAN_JWT_SECRET", raising=False)
    with store.write() as conn:
        admin = auth.create_user(conn, "admin", "a long password", Role.ADMIN)
    assert_error(client.get("/users", headers=forged(PUBLIC_SECRET, admin)), 401)
    # the real thing works
    r = client.post("/token", data={"username": "admin", "password": "a long password"})
    assert client.get("/users", headers=bearer(r.json()["access_token"])).status_code == 200


def test_the_generated_secret_is_private_stable_and_per_home(tmp_path: Path) -> None:
    one = Settings(home=tmp_path / "one")
    first = home_secrets.jwt_secret(one)
    path = home_secrets.jwt_secret_path(one)
    assert path == tmp_path / "one" / "jwt_secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) >= 43 and first != PUBLIC_SECRET
    Settings().check_jwt_secret(first)  # as strong as production demands
    assert home_secrets.jwt_secret(Settings(home=tmp_path / "one")) == first  # read back
    assert home_secrets.jwt_secret(Settings(home=tmp_path / "two")) != first
    configured = Settings(home=tmp_path / "one", jwt_secret="c" * 8 + secrets.token_hex(24))
    assert home_secrets.jwt_secret(configured) == configured.api.jwt_secret.get_secret_value()  # type: ignore[union-attr]


RACER = """
import os, sys, time
from pathlib import Path
from ferryman.home_secrets import jwt_secret
from ferryman.settings import Settings
settings = Settings(home=Path(sys.argv[1]))
while not os.path.exists(sys.argv[2]):  # all start at once
    time.sleep(0.001)
print(jwt_secret(settings))
"""


def test_processes_starting_together_agree_on_one_secret(tmp_path: Path) -> None:
    """Server and CLI processes on one home race to create the file: one wins,
    all read the winner's secret."""
    go = tmp_path / "go"
    home = tmp_path / "home"
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(home), str(go)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(8)
    ]
    time.sleep(1.0)  # they have imported ferryman and wait
    go.touch()
    got = [r.communicate(timeout=60)[0].strip() for r in racers]
    assert all(r.returncode == 0 for r in racers)
    assert len(set(got)) == 1 and len(got[0]) >= 43
    assert (home / "jwt_secret").read_text().strip() == got[0]


def test_a_tampered_secret_file_stops_the_start(tmp_path: Path) -> None:
    s = Settings(home=tmp_path)
    tmp_path.mkdir(exist_ok=True)
    home_secrets.jwt_secret_path(s).write_text("short\n")
    with pytest.raises(ValueError, match="jwt_secret"):
        home_secrets.jwt_secret(s)


WEAK = [
    ("a" * 32, "different characters"),
    (" " * 32, "different characters"),
    ("ab" * 24, "different characters"),
    ("passwordpasswordpasswordpassword", "different characters"),
    ("s" * 31, "fewer than 32 characters"),
    (PUBLIC_SECRET, "public"),
    ("aaaaaaaaaaaaaaaaaaaaaaaaabcdefgh", "entropy"),
]


@pytest.mark.parametrize(("secret", "why"), WEAK)
def test_production_refuses_weak_secrets(
    secret: str, why: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FERRYMAN_JWT_SECRET", raising=False)
    with pytest.raises(ValueError) as caught:
        Settings(env="production", jwt_secret=secret).check_production()
    message = str(caught.value)
    assert why in message
    # The error says exactly what is required, and never shows the secret.
    assert "at least 32 characters" in message and "8 different characters" in message
    assert "80 bits" in message
    assert secret.strip() == "" or secret not in message


def test_production_needs_a_configured_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FERRYMAN_JWT_SECRET", raising=False)
    Settings(env="development").check_production()  # development: generated per home
    with pytest.raises(ValueError, match="FERRYMAN_JWT_SECRET") as caught:
        Settings(env="production").check_production()
    assert "several servers" in str(caught.value)


GENERATORS: list[Callable[[], str]] = [
    lambda: secrets.token_urlsafe(32),
    lambda: secrets.token_hex(16),
    lambda: secrets.token_hex(32),
]


@pytest.mark.parametrize("make", GENERATORS)
def test_production_accepts_generated_secrets(
    make: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for _ in range(200):
        secret = make()
        Settings(env="production", jwt_secret=secret).check_production()
    monkeypatch.setenv("FERRYMAN_ENV", "production")
    monkeypatch.setenv("FERRYMAN_JWT_SECRET", secrets.token_urlsafe(32))
    Settings().check_production()

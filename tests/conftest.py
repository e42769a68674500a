"""Shared fixtures: a store on SQLite and on PostgreSQL for every DB test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from tests.webhook_support import receivers as receivers  # the fixture, for every test

from ferryman.settings import Settings
from ferryman.store.engine import Store
from ferryman.store.migrate import upgrade
from ferryman.store.tables import metadata

PG_URL = os.environ.get("FERRYMAN_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _pg_available() -> str | None:
    try:
        eng = sa.create_engine(Store(PG_URL).url, connect_args={"connect_timeout": 3})
        with eng.connect() as c:
            c.exec_driver_sql("SELECT 1")
        eng.dispose()
        return None
    except Exception as exc:
        return f"PostgreSQL not reachable at {PG_URL}: {exc}"


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, migrated."""
    why = _pg_available()
    if why:
        if IN_CI:
            pytest.fail(why)
        pytest.skip(why)
    admin = sa.create_engine(Store(PG_URL).url, isolation_level="AUTOCOMMIT")
    name = f"ferryman_t_{uuid.uuid4().hex[:8]}"
    with admin.connect() as c:
        c.exec_driver_sql(f"CREATE DATABASE {name}")
    url = str(sa.make_url(PG_URL).set(database=name).render_as_string(hide_password=False))
    store = Store(url)
    upgrade(store)
    store.dispose()
    yield url
    with admin.connect() as c:
        c.exec_driver_sql(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname='{name}'"
        )
        c.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
    admin.dispose()


def _truncate(store: Store) -> None:
    names = ", ".join(t.name for t in reversed(metadata.sorted_tables))
    with store.engine.begin() as c:
        c.exec_driver_sql(f"TRUNCATE {names} RESTART IDENTITY CASCADE")


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/ferryman.db"
    url: str = request.getfixturevalue("pg_database")
    s = Store(url)
    _truncate(s)
    s.dispose()
    return url


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(
        home=tmp_path / "home",
        database_url=db_url,
        lease_seconds=5,
        sweep_seconds=0.5,
        poll_seconds=0.5,
        grace_seconds=2,
        concurrency=8,
    )


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    s = Store.from_settings(settings)
    yield s
    s.dispose()

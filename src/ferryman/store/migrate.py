"""Schema migrations with Alembic, run programmatically.

The functions take any ``MigrationTarget`` (a ``Store`` is one) rather than
importing ``Store``: ``Store.prepare_schema`` calls ``upgrade``, so the store
must not be imported from here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL, Engine

from ferryman.store.locks import MIGRATION_LOCK_KEY

MIGRATIONS = Path(__file__).parent / "migrations"


class MigrationTarget(Protocol):
    """The database to migrate (``Store`` has all of it)."""

    @property
    def url(self) -> URL: ...

    @property
    def engine(self) -> Engine: ...

    @property
    def is_postgres(self) -> bool: ...


def alembic_config(store: MigrationTarget) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", store.url.render_as_string(hide_password=False))
    cfg.attributes["store"] = store
    return cfg


def head_revision(store: MigrationTarget) -> str | None:
    return ScriptDirectory.from_config(alembic_config(store)).get_current_head()


def current_revision(store: MigrationTarget) -> str | None:
    with store.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(store: MigrationTarget, revision: str = "head") -> bool:
    """Bring the schema to ``revision``; returns True when something ran.

    Safe to call from several processes at once: on PostgreSQL an advisory
    lock serialises the upgrades, on SQLite the write lock does.
    """
    cfg = alembic_config(store)
    target = ScriptDirectory.from_config(cfg).get_current_head() if revision == "head" else revision
    if current_revision(store) == target:
        return False
    with store.engine.connect() as conn:
        if store.is_postgres:
            conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
        try:
            if current_revision(store) == target:
                return False
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
            conn.commit()
        finally:
            if store.is_postgres:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
                conn.commit()
    return True

"""Schema migrations with Alembic, run programmatically.

The functions take any ``MigrationTarget`` (a ``Store`` is one) rather than
importing ``Store``: ``Store.prepare_schema`` calls ``upgrade``, so the store
must not be imported from here.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
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

    @property
    def is_sqlite(self) -> bool: ...


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
    with _migrating(store) as conn:
        if current_revision(store) == target:
            return False
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    return True


def downgrade(store: MigrationTarget, revision: str) -> None:
    """Take the schema back to ``revision`` (for operators and tests; data the
    newer schema held may be lost)."""
    cfg = alembic_config(store)
    with _migrating(store) as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


@contextmanager
def _migrating(store: MigrationTarget) -> Iterator[sa.Connection]:
    """A connection to migrate on, committed at the end: the advisory lock held
    on PostgreSQL; foreign keys not enforced on SQLite, and checked before
    the commit."""
    with store.engine.connect() as conn:
        if store.is_postgres:
            conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
        elif store.is_sqlite:
            # Batch mode rebuilds tables (create, copy, drop, rename): with foreign
            # keys enforced, dropping ``users`` would cascade to its API tokens.
            # SQLite's own procedure: enforcement off (only possible outside a
            # transaction), rebuild, check the keys, enforcement on again.
            _sqlite_foreign_keys(conn, on=False)
        try:
            yield conn
            if store.is_sqlite:
                broken = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
                if broken:
                    raise RuntimeError(f"the migration broke foreign keys: {broken[:5]}")
            conn.commit()
        finally:
            if conn.in_transaction():
                conn.rollback()
            if store.is_postgres:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
                conn.commit()
            elif store.is_sqlite:
                _sqlite_foreign_keys(conn, on=True)


def _sqlite_foreign_keys(conn: sa.Connection, *, on: bool) -> None:
    # On the DBAPI connection itself: through SQLAlchemy the statement would
    # open a transaction first, inside which SQLite ignores this pragma.
    conn.connection.dbapi_connection.execute(  # type: ignore[union-attr]
        f"PRAGMA foreign_keys={'ON' if on else 'OFF'}"
    )

"""The schema: migrations match the table definitions, and HEAD is current."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from ferryman.store.engine import HEAD_REVISION, Store
from ferryman.store.migrate import current_revision, head_revision, upgrade
from ferryman.store.tables import metadata


def test_head_constant_matches_the_scripts(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/x.db")
    assert head_revision(store) == HEAD_REVISION


def test_migrations_create_exactly_the_tables(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/x.db")
    assert store.schema_revision() is None
    assert upgrade(store) is True
    assert upgrade(store) is False  # idempotent
    assert current_revision(store) == HEAD_REVISION == store.schema_revision()
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []
    store.dispose()


def test_migrations_match_on_postgres(pg_database: str) -> None:
    store = Store(pg_database)
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    store.dispose()
    assert diff == []

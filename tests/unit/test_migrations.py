"""The schema: migrations match the table definitions, and HEAD is current."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from ferryman.store.engine import HEAD_REVISION, Store
from ferryman.store.migrate import current_revision, head_revision, upgrade
from ferryman.store.tables import SEED_ROWS, exists_on, metadata


def _diff(conn: Any) -> list[Any]:
    dialect = conn.dialect.name

    def include(obj: Any, name: Any, kind: str, reflected: bool, other: Any) -> bool:
        return reflected or exists_on(obj, dialect)

    ctx = MigrationContext.configure(conn, opts={"include_object": include})
    return list(compare_metadata(ctx, metadata))


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
        diff = _diff(conn)
    assert diff == []
    store.dispose()


def test_migrations_match_on_postgres(pg_database: str) -> None:
    store = Store(pg_database)
    with store.engine.connect() as conn:
        diff = _diff(conn)
        gin = conn.exec_driver_sql(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_runs_labels_gin'"
        ).scalar()
    store.dispose()
    assert gin is not None and "gin" in gin and "jsonb_path_ops" in gin
    assert diff == []


def _fresh_schema_matches(store: Store) -> None:
    assert store.schema_revision() is None
    assert store.create_schema() is True
    assert store.create_schema() is False  # tables exist: nothing is created twice
    assert store.schema_revision() == HEAD_REVISION
    assert upgrade(store) is False  # Alembic agrees the schema is at head
    with store.engine.connect() as conn:
        assert _diff(conn) == []
        for table, rows in SEED_ROWS:  # the data rows the migrations insert
            got = [dict(r._mapping) for r in conn.execute(sa.select(table))]
            assert got == rows, table.name


def test_first_start_creates_the_migrated_schema_without_alembic(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/x.db")
    _fresh_schema_matches(store)
    store.dispose()


def test_create_schema_refuses_a_database_that_has_tables(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/x.db")
    with store.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE somebody_elses (x INTEGER)")
    assert store.create_schema() is False
    assert store.schema_revision() is None
    store.dispose()


def test_first_start_on_postgres(pg_database: str) -> None:
    import uuid

    import sqlalchemy as sa

    admin = sa.create_engine(Store(pg_database).url, isolation_level="AUTOCOMMIT")
    name = f"ferryman_fresh_{uuid.uuid4().hex[:8]}"
    with admin.connect() as c:
        c.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        store = Store(str(sa.make_url(pg_database).set(database=name)))
        _fresh_schema_matches(store)
        with store.engine.connect() as conn:
            gin = conn.exec_driver_sql(
                "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_runs_labels_gin'"
            ).scalar()
        assert gin is not None and "jsonb_path_ops" in gin
        store.dispose()
    finally:
        with admin.connect() as c:
            c.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()


def test_migrations_insert_the_seed_rows(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/x.db")
    upgrade(store)
    with store.engine.connect() as conn:
        for table, rows in SEED_ROWS:
            assert [dict(r._mapping) for r in conn.execute(sa.select(table))] == rows
    store.dispose()

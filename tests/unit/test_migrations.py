"""The schema: migrations match the table definitions, and HEAD is current."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from ferryman.store.engine import HEAD_REVISION, Store
from ferryman.store.migrate import current_revision, downgrade, head_revision, upgrade
from ferryman.store.tables import SEED_ROWS, api_tokens, exists_on, metadata, users, utcnow


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


# -- 0007: user ids never reused, user keys, login failures (issue 11) ------------------


def _seed_0006(store: Store) -> None:
    """Two users (one with a lock, one with API tokens) as 0006 knew them."""
    with store.engine.begin() as conn:
        for uid, name in ((1, "ann"), (2, "bob")):
            conn.execute(
                sa.text(
                    "INSERT INTO users (id, username, password_hash, role, disabled, "
                    "failed_logins, locked_until, created_at, updated_at) VALUES "
                    "(:id, :name, 'x', 'admin', false, 3, NULL, :now, :now)"
                ),
                {"id": uid, "name": name, "now": dt.datetime(2026, 1, 1)},
            )
        for tid in ("aa", "bb"):
            conn.execute(
                sa.text(
                    "INSERT INTO api_tokens (id, user_id, name, token_hash, created_at) "
                    "VALUES (:id, 2, 'bot', 'h', :now)"
                ),
                {"id": tid, "now": dt.datetime(2026, 1, 1)},
            )


def _check_0007(store: Store) -> None:
    with store.engine.connect() as conn:
        people = conn.execute(sa.select(users).order_by(users.c.id)).all()
        tokens = conn.execute(sa.select(api_tokens).order_by(api_tokens.c.id)).all()
    assert [p.username for p in people] == ["ann", "bob"]
    keys = [p.uid for p in people] + [p.session_key for p in people]
    assert all(len(k) == 32 for k in keys) and len(set(keys)) == 4
    # the rebuild of users did not cascade to the tokens
    assert [t.id for t in tokens] == ["aa", "bb"]
    assert {t.user_uid for t in tokens} == {people[1].uid}
    with store.write() as conn:  # the highest id, deleted, is not handed out again
        conn.execute(sa.delete(users).where(users.c.id == 2))
        conn.execute(
            sa.insert(users).values(
                uid="c" * 32, session_key="d" * 32, username="cid", role="viewer",
                disabled=False, created_at=utcnow(), updated_at=utcnow(),
            )
        )  # fmt: skip
        new_id = conn.execute(sa.select(users.c.id).where(users.c.username == "cid")).scalar()
    assert new_id == 3


def _sqlite_autoincrement(store: Store) -> bool:
    with store.engine.connect() as conn:
        ddl = conn.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'users'"
        ).scalar()
    return "AUTOINCREMENT" in str(ddl)


def test_0007_upgrades_users_and_tokens_on_sqlite(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/x.db")
    upgrade(store, "0006")
    _seed_0006(store)
    assert not _sqlite_autoincrement(store)
    assert upgrade(store) is True
    assert _sqlite_autoincrement(store)
    with store.engine.connect() as conn:
        assert _diff(conn) == []
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1  # on again
    _check_0007(store)
    store.dispose()


def test_0007_upgrades_users_and_tokens_on_postgres(pg_database: str) -> None:
    import uuid

    admin = sa.create_engine(Store(pg_database).url, isolation_level="AUTOCOMMIT")
    name = f"ferryman_m7_{uuid.uuid4().hex[:8]}"
    with admin.connect() as c:
        c.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        store = Store(str(sa.make_url(pg_database).set(database=name)))
        upgrade(store, "0006")
        _seed_0006(store)
        with store.engine.begin() as conn:  # the rows were inserted with explicit ids
            conn.exec_driver_sql("SELECT setval('users_id_seq', 2)")
        assert upgrade(store) is True
        with store.engine.connect() as conn:
            assert _diff(conn) == []
        _check_0007(store)
        store.dispose()
    finally:
        with admin.connect() as c:
            c.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()


def test_a_fresh_sqlite_schema_never_reuses_user_ids(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/x.db")
    assert store.create_schema() is True
    assert _sqlite_autoincrement(store)
    store.dispose()


def test_0007_downgrades_and_upgrades_again(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/x.db")
    upgrade(store, "0006")
    _seed_0006(store)
    upgrade(store)
    downgrade(store, "0006")
    assert current_revision(store) == "0006"
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM api_tokens").scalar() == 2
    assert upgrade(store) is True
    _check_0007(store)
    store.dispose()


# -- 0009: run names (issue 12, item 10) -----------------------------------------------


def _seed_runs_0007(store: Store) -> list[str]:
    """Runs as 0007 knew them (no name): two namespaces, and two ids of one
    namespace whose last 8 hex digits agree."""
    ids = ["01a20a0270ed7204a81f184e9cf8a93a", "01a20a02dd247b55b99ce1931e9cf8a9",
           "01a20a02dd247b55b99ce193aadab66f", "01a20a030000000000001111" + "1e9cf8a9"]  # fmt: skip
    now = dt.datetime(2026, 1, 1)
    with store.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO pipelines (id, namespace, name, created_at, updated_at) "
                "VALUES (1, 'default', 'etl', :now, :now)"
            ),
            {"now": now},
        )
        conn.execute(
            sa.text(
                "INSERT INTO pipeline_versions (id, pipeline_id, version, spec, created_at) "
                "VALUES (1, 1, 'v1', '{}', :now)"
            ),
            {"now": now},
        )
        for i, run_id in enumerate(ids):
            conn.execute(
                sa.text(
                    "INSERT INTO runs (id, namespace, pipeline, pipeline_version_id, version, "
                    "state, params, labels, nodes_total, nodes_remaining, cancel_requested, "
                    "options, created_at, updated_at) VALUES (:id, :ns, 'etl', 1, 'v1', "
                    "'succeeded', '{}', '{}', 1, 0, false, '{}', :now, :now)"
                ),
                {"id": run_id, "ns": "other" if i == 2 else "default", "now": now},
            )
            conn.execute(
                sa.text(
                    "INSERT INTO nodes (run_id, name, state, attempt, max_attempts, waiting_on, "
                    "cancel_requested, has_output, reused) "
                    "VALUES (:id, 'a', 'succeeded', 1, 1, 0, false, false, false)"
                ),
                {"id": run_id},
            )
    return ids


def _check_0009(store: Store, ids: list[str]) -> None:
    from ferryman.store.tables import nodes, runs

    with store.engine.connect() as conn:
        named = dict(conn.execute(sa.select(runs.c.id, runs.c.name)).all())
        kept = conn.execute(sa.select(sa.func.count()).select_from(nodes)).scalar()
    assert named == {
        ids[0]: "run-" + ids[0][-8:],
        ids[1]: "run-" + ids[1][-8:],
        ids[2]: "run-" + ids[2][-8:],
        # the same last 8 digits as ids[1] in the same namespace: more digits
        ids[3]: "run-" + ids[3][-12:],
    }
    assert kept == 4  # the rebuild of runs did not cascade to the nodes
    with store.engine.begin() as conn, pytest.raises(sa.exc.IntegrityError):
        conn.execute(sa.update(runs).where(runs.c.id == ids[0]).values(name=named[ids[1]]))


def test_0009_names_existing_runs_on_sqlite(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/x.db")
    upgrade(store, "0007")
    ids = _seed_runs_0007(store)
    assert upgrade(store) is True
    with store.engine.connect() as conn:
        assert _diff(conn) == []
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    _check_0009(store, ids)
    downgrade(store, "0007")
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM nodes").scalar() == 4
    assert upgrade(store) is True
    _check_0009(store, ids)
    store.dispose()


def test_0009_names_existing_runs_on_postgres(pg_database: str) -> None:
    import uuid

    admin = sa.create_engine(Store(pg_database).url, isolation_level="AUTOCOMMIT")
    name = f"ferryman_m8_{uuid.uuid4().hex[:8]}"
    with admin.connect() as c:
        c.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        store = Store(str(sa.make_url(pg_database).set(database=name)))
        upgrade(store, "0007")
        ids = _seed_runs_0007(store)
        assert upgrade(store) is True
        with store.engine.connect() as conn:
            assert _diff(conn) == []
        _check_0009(store, ids)
        store.dispose()
    finally:
        with admin.connect() as c:
            c.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()

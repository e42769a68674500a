"""Alembic environment: uses the connection handed over by ferryman.store.migrate."""

from __future__ import annotations

from alembic import context

from ferryman.store.tables import metadata

config = context.config
connection = config.attributes.get("connection")


def run() -> None:
    if connection is None:
        import sqlalchemy as sa

        engine = sa.create_engine(config.get_main_option("sqlalchemy.url") or "")
        with engine.connect() as conn:
            _configure(conn)
            with context.begin_transaction():
                context.run_migrations()
            conn.commit()
        return
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()


def _configure(conn: object) -> None:
    context.configure(
        connection=conn,  # type: ignore[arg-type]
        target_metadata=metadata,
        render_as_batch=True,
        compare_type=True,
    )


run()

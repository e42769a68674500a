"""run names

Revision ID: 0009
Revises: 0008

Issue 12, item 10: runs.name, a short readable handle unique per namespace
(``brave-otter-42``), usable wherever a run id or prefix is. Runs created
before this revision are named ``run-`` and the last 8 hex digits of their id
(more digits, oldest run first, when two runs of a namespace would share them).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_BATCH = 1000


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("name", sa.String(length=64), nullable=True))

    conn = op.get_bind()
    runs = sa.table("runs", sa.column("id"), sa.column("namespace"), sa.column("name"))
    taken: dict[str, set[str]] = {}
    pending: list[dict[str, str]] = []
    for run_id, namespace in conn.execute(
        sa.select(runs.c.id, runs.c.namespace).order_by(runs.c.id)
    ).all():
        used = taken.setdefault(namespace, set())
        size = 8
        name = f"run-{run_id[-size:]}"
        while name in used:  # the random tails of two ids of one namespace agree
            size += 4
            name = f"run-{run_id[-size:]}" if size < len(run_id) else f"run-{run_id}"
        used.add(name)
        pending.append({"rid": run_id, "rname": name})
        if len(pending) >= _BATCH:
            _name_runs(conn, runs, pending)
            pending = []
    if pending:
        _name_runs(conn, runs, pending)

    with op.batch_alter_table("runs") as batch:
        batch.alter_column("name", existing_type=sa.String(length=64), nullable=False)
        batch.create_unique_constraint("uq_runs_name", ["name", "namespace"])


def _name_runs(conn: sa.Connection, runs: sa.TableClause, rows: list[dict[str, str]]) -> None:
    conn.execute(
        sa.update(runs).where(runs.c.id == sa.bindparam("rid")).values(name=sa.bindparam("rname")),
        rows,
    )


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_constraint("uq_runs_name", type_="unique")
        batch.drop_column("name")

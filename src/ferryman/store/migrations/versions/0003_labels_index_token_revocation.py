"""labels index, token revocation

Revision ID: 0003
Revises: 0002

- a GIN index (jsonb_path_ops) on runs.labels, PostgreSQL only: label
  filters use ``labels @> '{"k": "v"}'``;
- users.tokens_valid_after: access tokens issued before it are refused
  (set when a password changes or a user is disabled).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ferryman.store.tables import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("tokens_valid_after", UTCDateTime(), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.create_index(
            "ix_runs_labels_gin",
            "runs",
            ["labels"],
            postgresql_using="gin",
            postgresql_ops={"labels": "jsonb_path_ops"},
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_runs_labels_gin", table_name="runs")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("tokens_valid_after")

"""pipeline triggers and trigger firings (issue 4 - event triggers)

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ferryman.store.tables import JSONType, UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pipeline_triggers",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("target_namespace", sa.String(length=128), nullable=False),
        sa.Column("target_pipeline", sa.String(length=128), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("source_namespace", sa.String(length=128), nullable=False),
        sa.Column("source_pipeline", sa.String(length=128), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("spec", JSONType, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "target_namespace", "target_pipeline", "position", "state", name="uq_pipeline_triggers"
        ),
    )
    with op.batch_alter_table("pipeline_triggers", schema=None) as batch_op:
        batch_op.create_index(
            "ix_pipeline_triggers_source",
            ["source_namespace", "source_pipeline", "state"],
            unique=False,
        )
    op.create_table(
        "trigger_firings",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("source_run_id", sa.String(length=32), nullable=False),
        sa.Column("event_id", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("target_namespace", sa.String(length=128), nullable=False),
        sa.Column("target_pipeline", sa.String(length=128), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(length=32), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["source_run_id"], ["runs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "source_run_id",
            "target_namespace",
            "target_pipeline",
            "position",
            name="uq_trigger_firings",
        ),
    )


def downgrade() -> None:
    op.drop_table("trigger_firings")
    with op.batch_alter_table("pipeline_triggers", schema=None) as batch_op:
        batch_op.drop_index("ix_pipeline_triggers_source")
    op.drop_table("pipeline_triggers")

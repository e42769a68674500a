"""web-API plugin state

Revision ID: 0014
Revises: 0013

Issue 15: task resources (meta, pending deletes, state messages), the shared
token buckets of the plugins' rate limiters, quotas and their holders, and
per-plugin counters (docs/decisions/0014-plugins.md).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ferryman.store.tables import JSONType, UTCDateTime

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "task_resources",
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("plugin", sa.String(100), nullable=False),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("node", sa.String(128), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("context", JSONType, nullable=True),
        sa.Column("meta", JSONType, nullable=True),
        sa.Column("message", sa.Text, nullable=True),
        sa.Column("delete_reason", sa.Text, nullable=True),
        sa.Column("done", sa.Boolean, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_task_resources_pending", "task_resources", ["done", "delete_reason"])
    op.create_index("ix_task_resources_run", "task_resources", ["run_id", "node"])
    op.create_table(
        "plugin_buckets",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("tokens", sa.Float, nullable=False),
        sa.Column("updated", sa.Float, nullable=False),
    )
    op.create_table(
        "plugin_quotas",
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("in_use", sa.Integer, nullable=False),
    )
    op.create_table(
        "plugin_quota_holders",
        sa.Column("holder", sa.String(255), primary_key=True),
        sa.Column("quota_key", sa.String(200), nullable=False),
        sa.Column("acquired_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "plugin_counters",
        sa.Column("plugin", sa.String(100), primary_key=True),
        sa.Column("counter", sa.String(64), primary_key=True),
        sa.Column("value", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    for table in ("plugin_counters", "plugin_quota_holders", "plugin_quotas", "plugin_buckets"):
        op.drop_table(table)
    op.drop_index("ix_task_resources_run", "task_resources")
    op.drop_index("ix_task_resources_pending", "task_resources")
    op.drop_table("task_resources")

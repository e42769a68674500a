"""run leases

Revision ID: 0013
Revises: 0012

Issue 12, item 3: ``run_leases``, the lease of a run executed inside a CLI
process (``ferryman run``), so that a run whose process was ``kill -9``-ed
is ended by the next ferryman command instead of staying ``running``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ferryman.store.tables import UTCDateTime

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "run_leases",
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("holder", sa.String(length=128), nullable=False),
        sa.Column("command", sa.String(length=64), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("run_id"),
    )
    op.create_index("ix_run_leases_holder", "run_leases", ["holder"])
    op.create_index("ix_run_leases_expires", "run_leases", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_run_leases_expires", table_name="run_leases")
    op.drop_index("ix_run_leases_holder", table_name="run_leases")
    op.drop_table("run_leases")

"""launch nonce on nodes

Revision ID: 0006
Revises: 0005

nodes.launch_nonce: the result-line nonce of the running attempt, so that a
worker re-attaching to a container or Kubernetes job started by a lost worker
can read the step's result.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(sa.Column("launch_nonce", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("launch_nonce")

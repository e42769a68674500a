"""reserved 0004 (issue 4 - subscriptions and deliveries)

Revision ID: 0004
Revises: 0003

Reserved so that parallel work can each own one revision; no schema change
until it is filled in.
"""

from __future__ import annotations

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass

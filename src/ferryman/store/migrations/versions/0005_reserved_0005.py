"""reserved 0005 (issue 4 - event triggers)

Revision ID: 0005
Revises: 0004

Reserved so that parallel work can each own one revision; no schema change
until it is filled in.
"""

from __future__ import annotations

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass

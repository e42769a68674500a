"""reserved 0006 (issue 5 - container infrastructures)

Revision ID: 0006
Revises: 0005

Reserved so that parallel work can each own one revision; no schema change
until it is filled in.
"""

from __future__ import annotations

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass

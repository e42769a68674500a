"""reserved 0003 (issue 3 - labels index, token revocation)

Revision ID: 0003
Revises: 0002

Reserved so that parallel work can each own one revision; no schema change
until it is filled in.
"""

from __future__ import annotations

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass

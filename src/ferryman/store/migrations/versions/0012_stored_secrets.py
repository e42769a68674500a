"""stored secrets

Revision ID: 0012
Revises: 0011

Issue 13, item 7: ferryman's own secret store (``ferryman secrets set|ls|rm``).
One row per secret name; the value is sealed with the store's SecretBox
(``fmbox1:…``), never stored in plain text.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ferryman.store.tables import UTCDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stored_secrets",
        sa.Column("name", sa.String(length=128), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("updated_by", sa.String(length=128), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("stored_secrets")

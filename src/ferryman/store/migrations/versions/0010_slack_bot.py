"""the Slack bot: command audit and run messages

Revision ID: 0010
Revises: 0009

Issue 14: ``slack_commands`` records every command the bot received (who,
channel, command, outcome) under the Slack event's key, unique, so a retried
or duplicated event is answered once; ``slack_messages`` holds the bot's
message about each run it started, kept current with ``chat.update``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ferryman.store.tables import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "slack_commands",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("event_key", sa.String(255), nullable=False),
        sa.Column("slack_user", sa.String(64), nullable=False),
        sa.Column("slack_channel", sa.String(64), nullable=True),
        sa.Column("username", sa.String(128), nullable=True),
        sa.Column("command", sa.String(64), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("outcome", sa.String(32), nullable=True),
        sa.Column("detail", sa.Text, nullable=True),
        sa.Column("run_id", sa.String(32), nullable=True),
        sa.Column("error_id", sa.String(32), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.UniqueConstraint("event_key", name="uq_slack_commands_event_key"),
    )
    op.create_index("ix_slack_commands_created", "slack_commands", ["created_at"])
    op.create_table(
        "slack_messages",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("ts", sa.String(64), nullable=False),
        sa.Column("shown", sa.String(255), nullable=False),
        sa.Column("done", sa.Boolean, nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("channel", "ts", name="uq_slack_messages_message"),
    )
    op.create_index("ix_slack_messages_open", "slack_messages", ["done", "run_id"])


def downgrade() -> None:
    op.drop_index("ix_slack_messages_open", table_name="slack_messages")
    op.drop_table("slack_messages")
    op.drop_index("ix_slack_commands_created", table_name="slack_commands")
    op.drop_table("slack_commands")

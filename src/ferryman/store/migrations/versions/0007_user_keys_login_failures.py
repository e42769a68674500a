"""user keys, login failures

Revision ID: 0007
Revises: 0006

Issue 11 (security):

- users.id is never reused: SQLite gets ``AUTOINCREMENT`` (a table rebuild);
  PostgreSQL sequences never went back;
- users.uid: random and permanent; API tokens are bound to it
  (api_tokens.user_uid, checked on every use);
- users.session_key: random, carried by every JWT, replaced when the password
  changes or the user is disabled (it replaces users.tokens_valid_after);
- login_failures: failed logins per (username, client address), counted
  before the password is checked (it replaces users.failed_logins and
  users.locked_until, a lock on the whole account).

Existing users get fresh keys: JWTs issued before the upgrade stop working
(log in again); API tokens keep working.
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

from ferryman.store.tables import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _batch_kwargs(autoincrement: bool) -> dict[str, object]:
    # On SQLite every change below is a table rebuild; only a rebuild can add
    # (or remove) AUTOINCREMENT. PostgreSQL alters in place.
    if op.get_bind().dialect.name != "sqlite":
        return {}
    return {"recreate": "always", "table_kwargs": {"sqlite_autoincrement": autoincrement}}


def upgrade() -> None:
    op.create_table(
        "login_failures",
        sa.Column("username", sa.String(length=128), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("locked_until", UTCDateTime(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("username", "address"),
    )
    op.create_index("ix_login_failures_updated", "login_failures", ["updated_at"])

    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("uid", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("session_key", sa.String(length=32), nullable=True))
    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(sa.Column("user_uid", sa.String(length=32), nullable=True))

    conn = op.get_bind()
    users = sa.table("users", sa.column("id"), sa.column("uid"), sa.column("session_key"))
    tokens = sa.table("api_tokens", sa.column("user_id"), sa.column("user_uid"))
    for (user_id,) in conn.execute(sa.select(users.c.id)).all():
        uid = secrets.token_hex(16)
        conn.execute(
            sa.update(users)
            .where(users.c.id == user_id)
            .values(uid=uid, session_key=secrets.token_hex(16))
        )
        conn.execute(sa.update(tokens).where(tokens.c.user_id == user_id).values(user_uid=uid))

    with op.batch_alter_table("users", **_batch_kwargs(autoincrement=True)) as batch:  # type: ignore[arg-type]
        batch.alter_column("uid", existing_type=sa.String(length=32), nullable=False)
        batch.alter_column("session_key", existing_type=sa.String(length=32), nullable=False)
        batch.create_unique_constraint("uq_users_uid", ["uid"])
        batch.drop_column("failed_logins")
        batch.drop_column("locked_until")
        batch.drop_column("tokens_valid_after")
    with op.batch_alter_table("api_tokens") as batch:
        batch.alter_column("user_uid", existing_type=sa.String(length=32), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_column("user_uid")
    with op.batch_alter_table("users", **_batch_kwargs(autoincrement=False)) as batch:  # type: ignore[arg-type]
        batch.add_column(
            sa.Column("failed_logins", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("locked_until", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("tokens_valid_after", UTCDateTime(), nullable=True))
        batch.drop_constraint("uq_users_uid", type_="unique")
        batch.drop_column("session_key")
        batch.drop_column("uid")
    with op.batch_alter_table("users") as batch:
        batch.alter_column("failed_logins", existing_type=sa.Integer(), server_default=None)
    op.drop_index("ix_login_failures_updated", table_name="login_failures")
    op.drop_table("login_failures")

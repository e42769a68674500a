"""What the Slack bot writes and looks up: the command audit (each Slack
event taken once), who a Slack user is, and the bot's run messages.

The bot (``ferryman.slack``) is an interface: it parses and renders, and
these functions are the only ones that write its tables.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ferryman.redaction import SHAPES_ONLY
from ferryman.services.auth import Principal, Role
from ferryman.store.tables import new_id, slack_commands, slack_messages, users, utcnow

_MAX_TEXT = 2000
_MAX_DETAIL = 1000


def record_command(
    conn: Connection,
    *,
    event_key: str,
    slack_user: str,
    channel: str | None,
    command: str,
    text: str,
) -> str:
    """Record a received command (the audit) and return its id.

    ``event_key`` is unique: a second delivery of one Slack event raises
    ``sqlalchemy.exc.IntegrityError`` (the caller answers it with nothing:
    it has been answered). The text is kept with token shapes masked.
    """
    cid = new_id()
    conn.execute(
        sa.insert(slack_commands).values(
            id=cid,
            event_key=event_key[:255],
            slack_user=slack_user[:64],
            slack_channel=(channel or "")[:64] or None,
            command=command[:64],
            text=SHAPES_ONLY.text(text)[:_MAX_TEXT],
            created_at=utcnow(),
        )
    )
    return cid


def seen_event(conn: Connection, event_key: str) -> bool:
    """Whether a Slack event was already taken."""
    q = sa.select(slack_commands.c.id).where(slack_commands.c.event_key == event_key[:255])
    return conn.execute(q).first() is not None


def finish_command(
    conn: Connection,
    command_id: str,
    *,
    outcome: str,
    username: str | None = None,
    detail: str | None = None,
    run_id: str | None = None,
    error_id: str | None = None,
) -> None:
    """Record what a command came to (``ok``, ``refused``, ``invalid``, ``error``)."""
    conn.execute(
        sa.update(slack_commands)
        .where(slack_commands.c.id == command_id)
        .values(
            outcome=outcome[:32],
            username=username,
            detail=SHAPES_ONLY.text(detail)[:_MAX_DETAIL] if detail else None,
            run_id=run_id,
            error_id=error_id,
            finished_at=utcnow(),
        )
    )


def list_commands(conn: Connection, limit: int = 100) -> list[dict[str, Any]]:
    """The newest recorded commands first."""
    q = sa.select(slack_commands).order_by(slack_commands.c.created_at.desc()).limit(limit)
    return [dict(r._mapping) for r in conn.execute(q)]


# -- who a Slack user is ----------------------------------------------------------


def _principal(row: Any) -> Principal:
    return Principal(row.id, row.username, Role(row.role), "slack")


def principal_for_slack_user(conn: Connection, slack_user_id: str) -> Principal | None:
    """The enabled ferryman user carrying ``slack_user_id``, if any."""
    row = conn.execute(
        sa.select(users.c.id, users.c.username, users.c.role).where(
            users.c.slack_user_id == slack_user_id, users.c.disabled.is_(False)
        )
    ).first()
    return None if row is None else _principal(row)


def principal_for_email(conn: Connection, email: str) -> Principal | None:
    """The enabled ferryman user whose username is ``email`` (case ignored),
    unless that user carries another Slack id (an e-mail never overrides an
    explicit mapping)."""
    email = email.strip().lower()
    if "@" not in email:
        return None
    row = conn.execute(
        sa.select(users.c.id, users.c.username, users.c.role, users.c.slack_user_id).where(
            sa.func.lower(users.c.username) == email, users.c.disabled.is_(False)
        )
    ).first()
    if row is None or row.slack_user_id:
        return None
    return _principal(row)


# -- the bot's run messages --------------------------------------------------------


def track_message(conn: Connection, run_id: str, channel: str, ts: str, shown: str) -> None:
    """Remember the bot's message about ``run_id`` so it is kept current."""
    conn.execute(
        sa.insert(slack_messages).values(
            run_id=run_id,
            channel=channel,
            ts=ts,
            shown=shown[:255],
            done=False,
            updated_at=utcnow(),
        )
    )


def due_messages(conn: Connection, older_than: dt.datetime, limit: int = 50) -> list[Any]:
    """Open run messages not updated since ``older_than``, oldest first."""
    q = (
        sa.select(slack_messages)
        .where(slack_messages.c.done.is_(False), slack_messages.c.updated_at <= older_than)
        .order_by(slack_messages.c.updated_at)
        .limit(limit)
    )
    return list(conn.execute(q))


def message_shown(conn: Connection, message_id: int, shown: str, done: bool) -> None:
    """Record what a run message shows now (and whether it is final)."""
    conn.execute(
        sa.update(slack_messages)
        .where(slack_messages.c.id == message_id)
        .values(shown=shown[:255], done=done, updated_at=utcnow())
    )

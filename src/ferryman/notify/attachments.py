"""The file attached to a failed run's Slack completion: the tail of the
failed step's log, as recorded (the worker masked the step's declared
secrets) and with token shapes masked again here."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ferryman.redaction import SHAPES_ONLY
from ferryman.store.tables import logs

#: log lines of the failed step attached (its last ones)
LOG_LINES = 300


def failed_step_log(conn: Connection, run_id: str, step: str | None) -> str | None:
    """The last ``LOG_LINES`` lines of ``step``'s log in ``run_id`` (its last
    attempt), or None when the step logged nothing."""
    if not step:
        return None
    attempt = conn.execute(
        sa.select(sa.func.max(logs.c.attempt)).where(logs.c.run_id == run_id, logs.c.node == step)
    ).scalar()
    if attempt is None:
        return None
    rows = conn.execute(
        sa.select(logs.c.line)
        .where(logs.c.run_id == run_id, logs.c.node == step, logs.c.attempt == attempt)
        .order_by(logs.c.id.desc())
        .limit(LOG_LINES)
    ).all()
    lines = [SHAPES_ONLY.line(str(r.line)) for r in reversed(rows)]
    return "\n".join(lines) + "\n" if lines else None

"""Run-completion callbacks: queued in the transaction that ends the run.

``enqueue_callbacks`` is a gate hook (``GateHooks.on_run_ended``): one
``callbacks`` row per target the run's options name (a webhook, a Slack
channel), written with the run's final state, so a crash or a restart can
never lose one (outbox). ``engine/callback_sender/`` delivers them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from ferryman.domain.states import RunState
from ferryman.services.gate import Tx
from ferryman.store.engine import CALLBACK_CHANNEL
from ferryman.store.tables import callbacks, new_id


def enqueue_callbacks(tx: Tx, run_id: str, state: RunState, event: Mapping[str, Any]) -> None:
    """Queue the completion callbacks of ``run_id``, which just ended in ``state``."""
    opts = tx.cache.get(tx.conn, run_id).options
    targets: list[tuple[str, dict[str, Any]]] = []
    if opts.webhook_url:
        hook: dict[str, Any] = {"url": opts.webhook_url}
        if opts.webhook_format:
            hook["format"] = opts.webhook_format
        targets.append(("webhook", hook))
    if opts.slack_channel:
        slack: dict[str, Any] = {"channel": opts.slack_channel, "thread": opts.slack_thread}
        if opts.slack_attach_log:
            slack["attach_log"] = True
        targets.append(("slack", slack))
    for kind, target in targets:
        tx.conn.execute(
            sa.insert(callbacks).values(
                id=new_id(), run_id=run_id, kind=kind, target=target, state="pending",
                attempts=0, next_attempt_at=tx.now, created_at=tx.now,
            )
        )  # fmt: skip
    if targets:
        tx.wake(CALLBACK_CHANNEL)

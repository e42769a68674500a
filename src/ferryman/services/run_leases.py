"""Run leases: a run executed inside a CLI process (``ferryman run``,
``ferryman runs rerun``) is leased to that process, so that it never stays
``running`` after the process died.

The process's embedded worker renews the lease with its heartbeats (every
``FERRYMAN_HEARTBEAT_SECONDS``, for ``FERRYMAN_LEASE_SECONDS``) and drops it
when the run has ended. A process killed with ``kill -9`` cannot drop it:
once it has expired, the next ferryman command on the database (``run``,
``runs …``, ``worker``, ``server``; ``end_orphans``) ends the run
``failed`` with the error "the ferryman run process that ran it died". Its
steps that the dead process was running are cancelled with the same
message, the steps not started are cancelled; ``ferryman runs rerun`` then
continues from the steps that had not succeeded.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ferryman.domain.states import NodeState, RunState
from ferryman.services.gate import Tx
from ferryman.services.runs import RunService
from ferryman.services.selectors import sel_attempt
from ferryman.store.tables import nodes, run_leases, runs, utcnow

log = logging.getLogger(__name__)

_ACTIVE = (RunState.QUEUED.value, RunState.RUNNING.value)


def died_message(command: str) -> str:
    """The error of a run whose process died."""
    return f"the {command} process that ran it died"


def hold(conn: Connection, run_id: str, holder: str, command: str, seconds: float) -> None:
    """Lease ``run_id`` to the process whose embedded worker is ``holder``."""
    conn.execute(sa.delete(run_leases).where(run_leases.c.run_id == run_id))
    conn.execute(
        sa.insert(run_leases).values(
            run_id=run_id,
            holder=holder,
            command=command,
            expires_at=utcnow() + dt.timedelta(seconds=seconds),
        )
    )


def renew(conn: Connection, holder: str, until: dt.datetime) -> None:
    """Renew every run lease of ``holder`` (its worker's heartbeat)."""
    conn.execute(
        sa.update(run_leases).where(run_leases.c.holder == holder).values(expires_at=until)
    )


def release(conn: Connection, run_id: str) -> None:
    """Drop ``run_id``'s lease (its process saw it end)."""
    conn.execute(sa.delete(run_leases).where(run_leases.c.run_id == run_id))


def _orphans_query(now: dt.datetime) -> sa.Select[Any]:
    return (
        sa.select(run_leases.c.run_id, run_leases.c.holder, run_leases.c.command)
        .join(runs, runs.c.id == run_leases.c.run_id)
        .where(run_leases.c.expires_at < now, runs.c.state.in_(_ACTIVE))
        .limit(100)
    )


def end_orphaned_runs(tx: Tx, service: RunService) -> list[str]:
    """End (inside ``tx``) the runs whose process died: their lease expired
    while they were still queued or running. Returns their ids."""
    rows = tx.conn.execute(_orphans_query(tx.now)).all()
    ended = []
    for lease in rows:
        run_id, holder = str(lease.run_id), str(lease.holder)
        reason = died_message(str(lease.command))
        row = tx.conn.execute(
            sa.select(runs.c.state, runs.c.cancel_requested).where(runs.c.id == run_id)
        ).one()
        if not row.cancel_requested:
            # a "timeout"-kind cancel: the run ends failed, with ``reason`` as its error
            service.request_cancel(tx, run_id, reason, kind="timeout")
        else:
            # cancelled by the user before the process died: it still ends
            tx.conn.execute(sa.update(runs).where(runs.c.id == run_id).values(error=reason))
        # The attempts the dead process was running end now; those of other
        # workers (a fleet worker may have claimed some) get the cancel.
        running = tx.conn.execute(
            sa.select(nodes.c.id, nodes.c.name, nodes.c.attempt).where(
                nodes.c.run_id == run_id,
                nodes.c.state == NodeState.RUNNING.value,
                nodes.c.worker_id == holder,
            )
        ).all()
        for n in running:
            tx.node_failed(
                n.id,
                run_id,
                n.name,
                n.attempt,
                reason,
                retry_policy_delay=None,
                where=sel_attempt(n.attempt, holder),
                cancelled=True,
            )
        release(tx.conn, run_id)
        ended.append(run_id)
        log.warning("run %s: %s; it is ended as failed", run_id, reason)
    return ended


def end_orphans(service: RunService) -> list[str]:
    """``end_orphaned_runs`` in a transaction of its own, opened only when
    there is an orphan (a read first: reading commands stay cheap)."""
    store = service.store
    with store.read() as conn:
        if not conn.execute(_orphans_query(utcnow())).first():
            return []
    with store.write() as conn:
        tx = service.tx(conn)
        ended = end_orphaned_runs(tx, service)
        tx.flush()
    return ended

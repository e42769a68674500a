"""Read models: runs, steps, logs and events as plain dicts for the interfaces."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ferryman.errors import NotFound
from ferryman.store.tables import events, logs, nodes, runs

RUN_FIELDS = (
    "id",
    "namespace",
    "pipeline",
    "version",
    "state",
    "params",
    "labels",
    "nodes_total",
    "nodes_remaining",
    "failed_node",
    "error",
    "rerun_of",
    "trigger",
    "created_at",
    "started_at",
    "ended_at",
    "cancel_requested",
)
NODE_FIELDS = (
    "name",
    "state",
    "attempt",
    "max_attempts",
    "worker_id",
    "infra_kind",
    "infra_id",
    "error",
    "exit_code",
    "reused",
    "started_at",
    "ended_at",
    "has_output",
)


def _duration(start: dt.datetime | None, end: dt.datetime | None) -> float | None:
    if start is None:
        return None
    return ((end or dt.datetime.now(dt.UTC)) - start).total_seconds()


def run_dict(row: Any) -> dict[str, Any]:
    d = {k: getattr(row, k) for k in RUN_FIELDS}
    d["duration"] = _duration(row.started_at or row.created_at, row.ended_at)
    return d


def get_run(conn: Connection, run_id: str, *, with_nodes: bool = True) -> dict[str, Any]:
    row = conn.execute(sa.select(runs).where(runs.c.id == run_id)).first()
    if row is None:
        raise NotFound(f"no run {run_id!r}")
    d = run_dict(row)
    if with_nodes:
        d["nodes"] = [
            {
                **{k: getattr(n, k) for k in NODE_FIELDS},
                "duration": _duration(n.started_at, n.ended_at) if n.started_at else None,
            }
            for n in conn.execute(
                sa.select(nodes).where(nodes.c.run_id == run_id).order_by(nodes.c.id)
            )
        ]
    return d


def find_run_id(conn: Connection, prefix: str) -> str:
    """Accept a full run id or a unique prefix of one (at least 6 characters)."""
    if len(prefix) == 32:
        return prefix
    if len(prefix) < 6:
        raise NotFound(f"run id {prefix!r} is too short (give at least 6 characters)")
    ids = (
        conn.execute(sa.select(runs.c.id).where(runs.c.id.like(prefix.lower() + "%")).limit(2))
        .scalars()
        .all()
    )
    if not ids:
        raise NotFound(f"no run {prefix!r}")
    if len(ids) > 1:
        raise NotFound(f"run id prefix {prefix!r} is ambiguous")
    return str(ids[0])


def list_runs(
    conn: Connection,
    *,
    namespace: str | None = None,
    pipeline: str | None = None,
    state: str | None = None,
    limit: int = 50,
    before: str | None = None,
) -> list[dict[str, Any]]:
    """Newest first; ``before`` is a run id cursor (ids are time-ordered)."""
    q = sa.select(runs).order_by(runs.c.id.desc()).limit(limit)
    if namespace:
        q = q.where(runs.c.namespace == namespace)
    if pipeline:
        q = q.where(runs.c.pipeline == pipeline)
    if state:
        q = q.where(runs.c.state == state)
    if before:
        q = q.where(runs.c.id < before)
    return [run_dict(r) for r in conn.execute(q)]


def node_counts(conn: Connection, run_id: str) -> dict[str, int]:
    return {
        s: n
        for s, n in conn.execute(
            sa.select(nodes.c.state, sa.func.count())
            .where(nodes.c.run_id == run_id)
            .group_by(nodes.c.state)
        ).all()
    }


def running_nodes(conn: Connection, run_id: str, limit: int = 20) -> list[dict[str, Any]]:
    return [
        {"name": r.name, "attempt": r.attempt, "started_at": r.started_at}
        for r in conn.execute(
            sa.select(nodes.c.name, nodes.c.attempt, nodes.c.started_at)
            .where(nodes.c.run_id == run_id, nodes.c.state == "running")
            .order_by(nodes.c.started_at)
            .limit(limit)
        )
    ]


def get_logs(
    conn: Connection,
    run_id: str,
    *,
    node: str | None = None,
    after_id: int = 0,
    limit: int = 1000,
    tail: int | None = None,
) -> list[dict[str, Any]]:
    q = sa.select(logs).where(logs.c.run_id == run_id, logs.c.id > after_id)
    if node:
        q = q.where(logs.c.node == node)
    if tail is not None:
        rows = list(conn.execute(q.order_by(logs.c.id.desc()).limit(tail)))[::-1]
    else:
        rows = list(conn.execute(q.order_by(logs.c.id).limit(limit)))
    return [
        {
            "id": r.id,
            "node": r.node,
            "attempt": r.attempt,
            "stream": r.stream,
            "line": r.line,
            "time": r.time,
        }
        for r in rows
    ]


def get_events(
    conn: Connection, run_id: str, *, after_seq: int = 0, limit: int = 1000
) -> list[dict[str, Any]]:
    q = (
        sa.select(events)
        .where(events.c.run_id == run_id, events.c.seq > after_seq)
        .order_by(events.c.seq)
        .limit(limit)
    )
    return [dict(r._mapping) for r in conn.execute(q)]

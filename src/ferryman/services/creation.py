"""Run creation inside a transaction: ``RunRequest`` and ``create_run``.

``create_run`` is the single place that inserts a run and its nodes. It is
called by ``RunService`` (start, re-run: one transaction of their own) and by
whatever already runs inside a gate transaction (event triggers; later the
scheduler). Parameters are validated before a request is built.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from ferryman.domain.options import NO_OPTIONS, Origin, RunOptions
from ferryman.domain.run_names import run_name
from ferryman.domain.states import NodeState, RunState
from ferryman.errors import Conflict
from ferryman.services.cache import RunInfo
from ferryman.services.catalog import PipelineVersion
from ferryman.services.gate import CHUNK, Tx
from ferryman.services.queries import RUN_FIELDS, run_dict
from ferryman.store.tables import new_id, nodes, runs


@dataclass(frozen=True)
class RunRequest:
    """A run to create: a version, its *validated* parameters and the rest.

    ``reuse`` maps step names to the outputs of an earlier run (a re-run: those
    steps start succeeded). ``origin`` is stored as the run's ``trigger``.
    """

    pv: PipelineVersion
    params: dict[str, Any]
    options: RunOptions = NO_OPTIONS
    origin: Origin | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    idempotency_key: str | None = None
    rerun_of: str | None = None
    reuse: Mapping[str, Any] = field(default_factory=dict)


def create_run(tx: Tx, req: RunRequest) -> dict[str, Any]:
    """Insert a queued run of ``req`` and its nodes, queue the nodes without
    upstream, and record the events, all in ``tx``. Returns the new run as
    ``queries.run_dict`` shows it (``["id"]`` is its id), without reading it
    back. A used idempotency key makes the insert fail (``IntegrityError``):
    callers that accept keys look first (``find_by_key``)."""
    pv, spec, now, reuse = req.pv, req.pv.spec, tx.now, req.reuse
    run_id = new_id()
    labels = {**spec.labels, **req.labels}
    options = req.options.stored()
    trigger = req.origin.stored() if req.origin is not None else None
    timeout = req.options.timeout if req.options.timeout is not None else spec.timeout
    deadline = (now + dt.timedelta(seconds=timeout)) if timeout else None
    todo = [s for s in spec.steps if s.name not in reuse]
    values: dict[str, Any] = dict(
        id=run_id,
        namespace=pv.namespace,
        pipeline=spec.name,
        pipeline_version_id=pv.id,
        version=pv.version,
        state=RunState.QUEUED.value,
        params=req.params,
        labels=labels,
        idempotency_key=req.idempotency_key,
        nodes_total=len(spec.steps),
        nodes_remaining=len(todo),
        cancel_requested=False,
        deadline=deadline,
        rerun_of=req.rerun_of,
        trigger=trigger,
        options=options,
        created_at=now,
        updated_at=now,
    )
    values["name"] = _insert_run(tx.conn, values)
    record = {k: values.get(k) for k in RUN_FIELDS}
    record["duration"] = 0.0
    tx.cache.put(
        RunInfo(
            run_id,
            pv.namespace,
            spec.name,
            pv.version,
            pv.id,
            labels,
            req.params,
            req.options,
            spec,
            spec.downstream(),
            deadline=deadline,
        )
    )
    rows = []
    for s in spec.steps:
        reused = s.name in reuse
        rows.append(
            {
                "run_id": run_id,
                "name": s.name,
                "state": NodeState.SUCCEEDED.value if reused else NodeState.PENDING.value,
                "attempt": 0,
                "max_attempts": s.retries + 1,
                "waiting_on": sum(1 for d in set(s.depends_on) if d not in reuse),
                "ready_at": None,
                "cancel_requested": False,
                "has_output": reused,
                "output": reuse.get(s.name),
                "reused": reused,
                "ended_at": now if reused else None,
            }
        )
    for i in range(0, len(rows), CHUNK):
        tx.conn.execute(sa.insert(nodes), rows[i : i + CHUNK])
    tx.run_created(
        run_id,
        f"re-run of {req.rerun_of}" if req.rerun_of else "",
        {"trigger": trigger} if trigger else None,
    )
    tx.move_nodes(
        NodeState.QUEUED,
        where=sa.and_(nodes.c.run_id == run_id, nodes.c.waiting_on == 0),
        values={"ready_at": now},
    )
    return record


#: How many names a creation tries before giving up (the later ones are long:
#: see ``run_names.run_name``).
NAME_ATTEMPTS = 10
_RUN_INSERTS: dict[str, Any] = {}


def _run_insert(dialect: str) -> Any:
    """``INSERT INTO runs … ON CONFLICT (name, namespace) DO NOTHING RETURNING id``: a name
    another run of the namespace has (or, on PostgreSQL, is inserting in a
    transaction not committed yet: the insert waits for it) inserts nothing,
    without failing the caller's transaction, which may be the gate's."""
    stmt = _RUN_INSERTS.get(dialect)
    if stmt is None:
        insert: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
        stmt = (
            insert(runs)
            .on_conflict_do_nothing(index_elements=["name", "namespace"])
            .returning(runs.c.id)
        )
        _RUN_INSERTS[dialect] = stmt
    return stmt


def _insert_run(conn: Connection, values: dict[str, Any]) -> str:
    """Insert the run with a free name of its namespace; return the name."""
    stmt = _run_insert(conn.dialect.name)
    for attempt in range(NAME_ATTEMPTS):
        name = run_name(attempt)
        # RETURNING, not rowcount: drivers need not count an INSERT's rows
        if conn.execute(stmt, {**values, "name": name}).first() is not None:
            return name
    raise Conflict(f"no free run name in namespace {values['namespace']!r}; try again")


def find_by_key(conn: Connection, req: RunRequest) -> dict[str, Any] | None:
    """The run already created with ``req``'s idempotency key in its
    namespace (as ``queries.run_dict`` shows it), or None. A ``Conflict``
    (409) naming what differs if that run was for another pipeline, other
    parameters, other labels or other options: silently returning a run that
    is not the one asked for would be worse."""
    pv, key = req.pv, req.idempotency_key
    row = conn.execute(
        sa.select(runs).where(runs.c.namespace == pv.namespace, runs.c.idempotency_key == key)
    ).first()
    if row is None:
        return None
    # The labels a run of this request would have had: the pipeline's, then the request's.
    labels = {**pv.spec.labels, **req.labels}
    differs = [
        what
        for what, same in (
            ("pipeline", row.pipeline == pv.name),
            ("parameters", row.params == req.params),
            ("labels", (row.labels or {}) == labels),
            ("options", RunOptions.from_stored(row.options) == req.options),
        )
        if not same
    ]
    if differs:
        raise Conflict(
            f"idempotency key {key!r} was already used for run {row.id} with a different "
            + " and ".join(differs),
            {"run_id": row.id},
        )
    return run_dict(row)

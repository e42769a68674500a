"""Read models: runs, steps, logs, events and pipelines as plain dicts for the
interfaces, with the filters and cursor pagination the REST API offers."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection

from ferryman.domain.run_names import MAX_RUN_NAME
from ferryman.errors import Ambiguous, InvalidInput, NotFound
from ferryman.services.catalog import PipelineVersion, latest, spec_of_version
from ferryman.store.tables import (
    events,
    logs,
    nodes,
    pipeline_versions,
    pipelines,
    runs,
    task_resources,
)

RUN_FIELDS = (
    "id",
    "name",
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
    "options",
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


_RUN_COLUMNS = [runs.c[k] for k in RUN_FIELDS]
# Lists leave the parameters out unless asked: they can be large, and a page
# of runs should cost the same whatever the runs were given.
_LIST_FIELDS = tuple(k for k in RUN_FIELDS if k != "params")
_LIST_COLUMNS = [runs.c[k] for k in _LIST_FIELDS]


def _run_dict_of_tuple(row: Any, fields: Sequence[str] = RUN_FIELDS) -> dict[str, Any]:
    # a row of the columns of ``fields``, in order (cheaper than attribute access per field)
    d = dict(zip(fields, row, strict=True))
    d["duration"] = _duration(d["started_at"] or d["created_at"], d["ended_at"])
    return d


def get_run(conn: Connection, run_id: str, *, with_nodes: bool = True) -> dict[str, Any]:
    row = conn.execute(sa.select(runs).where(runs.c.id == run_id)).first()
    if row is None:
        raise NotFound(f"no run {run_id!r}")
    d = run_dict(row)
    if with_nodes:
        waits = _state_messages(conn, run_id)
        d["nodes"] = [
            {
                **{k: getattr(n, k) for k in NODE_FIELDS},
                "duration": _duration(n.started_at, n.ended_at) if n.started_at else None,
                "message": waits.get(n.name) if n.state == "running" else None,
            }
            for n in conn.execute(
                sa.select(nodes).where(nodes.c.run_id == run_id).order_by(nodes.c.id)
            )
        ]
    return d


def _state_messages(conn: Connection, run_id: str) -> dict[str, str]:
    """What the run's running task steps wait for (``waiting for quota ...``),
    by step: the newest attempt's message that is not cleared."""
    t = task_resources.c
    rows = conn.execute(
        sa.select(t.node, t.message)
        .where(t.run_id == run_id, t.done.is_(False), t.message.is_not(None))
        .order_by(t.attempt)
    )
    return {node: message for node, message in rows}


LABEL_KEY_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_./-]{0,127}$")
_HEX_RE = re.compile(r"^[0-9a-fA-F]+$")


def check_label_key(key: str) -> str:
    """Label keys are restricted so they can be filtered on safely (``key:value``)."""
    if not LABEL_KEY_RE.match(key):
        raise ValueError(
            f"invalid label key {key!r}: use letters, digits, '_', '.', '-' or '/' "
            "(at most 128 characters, not starting with '.', '-' or '/')"
        )
    return key


#: Label filters: a mapping, or (key, value) pairs (all must match).
LabelFilter = Mapping[str, str] | Sequence[tuple[str, str]]


def _label_clause(conn: Connection, key: str, value: str) -> sa.ColumnElement[bool]:
    if conn.dialect.name == "postgresql":
        # ``@>`` can use a GIN index on runs.labels.
        clause: sa.ColumnElement[bool] = sa.type_coerce(runs.c.labels, JSONB).contains({key: value})
        return clause
    extracted: sa.ColumnElement[str] = runs.c.labels[key].as_string()
    return extracted == value


def _run_filters(
    conn: Connection,
    *,
    namespace: str | None,
    pipeline: str | None,
    states: Sequence[str],
    labels: LabelFilter | None,
    created_after: dt.datetime | None,
    created_before: dt.datetime | None,
) -> list[sa.ColumnElement[bool]]:
    where: list[sa.ColumnElement[bool]] = []
    if namespace:
        where.append(runs.c.namespace == namespace)
    if pipeline:
        where.append(runs.c.pipeline == pipeline)
    if len(states) == 1:
        where.append(runs.c.state == states[0])
    elif states:
        where.append(runs.c.state.in_(list(states)))
    pairs = labels.items() if isinstance(labels, Mapping) else (labels or ())
    for key, value in pairs:
        try:
            check_label_key(key)
        except ValueError as exc:
            raise InvalidInput(str(exc), [{"path": "label", "reason": str(exc)}]) from None
        where.append(_label_clause(conn, key, value))
    # Run ids start with their creation time in milliseconds and are made right
    # after created_at is taken. Bounding the id as well (with a wide margin; the
    # created_at test stays exact) lets the newest-first scan of the primary key
    # start and stop near the time range instead of walking every newer run.
    if created_after is not None:
        after = _aware(created_after)
        where.append(runs.c.created_at >= after)
        where.append(runs.c.id >= _id_at(after, -_ID_TIME_SLACK))
    if created_before is not None:
        before = _aware(created_before)
        where.append(runs.c.created_at < before)
        where.append(runs.c.id < _id_at(before, _ID_TIME_SLACK))
    return where


_ID_TIME_SLACK = dt.timedelta(hours=1)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _id_at(t: dt.datetime, shift: dt.timedelta) -> str:
    """The smallest run id made at time ``t + shift`` (see ``store.tables.new_id``)."""
    ms = (t - _EPOCH + shift) // dt.timedelta(milliseconds=1)
    return f"{min(max(ms, 0), 2**48 - 1):012x}" + "0" * 20


def _aware(t: dt.datetime) -> dt.datetime:
    """Naive datetimes are taken as UTC."""
    return t if t.tzinfo is not None else t.replace(tzinfo=dt.UTC)


def list_runs(
    conn: Connection,
    *,
    namespace: str | None = None,
    pipeline: str | None = None,
    state: str | None = None,
    states: Sequence[str] = (),
    labels: LabelFilter | None = None,
    created_after: dt.datetime | None = None,
    created_before: dt.datetime | None = None,
    limit: int = 50,
    before: str | None = None,
    with_params: bool = True,
) -> list[dict[str, Any]]:
    """Newest first; ``before`` is a run id cursor (ids are time-ordered).

    ``state`` and ``states`` both filter on the run state (any of them);
    ``labels`` must all match; the creation time range is ``[after, before)``.
    Without ``with_params`` the parameters are not read (``params`` is None).
    """
    all_states = [*states, state] if state else list(states)
    fields = RUN_FIELDS if with_params else _LIST_FIELDS
    columns = _RUN_COLUMNS if with_params else _LIST_COLUMNS
    q = sa.select(*columns).order_by(runs.c.id.desc()).limit(limit)
    for clause in _run_filters(
        conn,
        namespace=namespace,
        pipeline=pipeline,
        states=all_states,
        labels=labels,
        created_after=created_after,
        created_before=created_before,
    ):
        q = q.where(clause)
    if before:
        q = q.where(runs.c.id < before)
    out = [_run_dict_of_tuple(r, fields) for r in conn.execute(q).all()]
    if not with_params:
        for d in out:
            d["params"] = None
    return out


def encode_cursor(run_id: str) -> str:
    """An opaque page cursor pointing after ``run_id``."""
    return base64.urlsafe_b64encode(bytes.fromhex(run_id)).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The run id inside a cursor made by ``encode_cursor`` (InvalidInput if bad)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 16:
        raise InvalidInput(
            "invalid cursor: pass the next_cursor of a previous page unchanged",
            [{"path": "cursor", "reason": "invalid cursor"}],
        )
    return raw.hex()


def page_runs(
    conn: Connection,
    *,
    limit: int = 50,
    cursor: str | None = None,
    namespace: str | None = None,
    pipeline: str | None = None,
    states: Sequence[str] = (),
    labels: LabelFilter | None = None,
    created_after: dt.datetime | None = None,
    created_before: dt.datetime | None = None,
    with_params: bool = False,
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of runs, newest first, and the cursor of the next page (None at
    the end). Keyset pagination on the time-ordered id: runs created while a
    client pages never shift the pages it has not read yet. The parameters
    are read only ``with_params``."""
    rows = list_runs(
        conn,
        namespace=namespace,
        pipeline=pipeline,
        states=states,
        labels=labels,
        created_after=created_after,
        created_before=created_before,
        limit=limit + 1,
        before=decode_cursor(cursor) if cursor else None,
        with_params=with_params,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (encode_cursor(rows[-1]["id"]) if more and rows else None)


def count_runs(
    conn: Connection,
    *,
    namespace: str | None = None,
    pipeline: str | None = None,
    labels: LabelFilter | None = None,
    created_after: dt.datetime | None = None,
    created_before: dt.datetime | None = None,
) -> dict[str, int]:
    """How many runs are in each state (states with no run are left out)."""
    q = sa.select(runs.c.state, sa.func.count()).group_by(runs.c.state)
    for clause in _run_filters(
        conn,
        namespace=namespace,
        pipeline=pipeline,
        states=(),
        labels=labels,
        created_after=created_after,
        created_before=created_before,
    ):
        q = q.where(clause)
    return {str(s): int(n) for s, n in conn.execute(q).all()}


#: How many runs an ambiguous handle lists.
MAX_CANDIDATES = 10


def full_run_id(given: str) -> str | None:
    """``given`` as a stored run id (lower case) when it is a whole one (32
    hex digits), else None: a prefix or a name, for ``resolve_run_id``."""
    rid = given.lower()
    return rid if len(rid) == 32 and _HEX_RE.match(rid) else None


def resolve_run_id(conn: Connection, given: str) -> str:
    """The id of the run that ``given`` names: its id (32 hex digits), a unique
    prefix of it (6 hex digits or more) or its name (``brave-otter-42``).

    A whole id is returned without a query (the caller's own lookup reports
    it missing). ``NotFound`` when nothing matches; ``Ambiguous`` (a
    ``NotFound``) when several runs do (a prefix, or a name used in several
    namespaces), with the newest of them in ``details``.
    """
    full = full_run_id(given)
    if full is not None:
        return full
    handle = given.lower()
    cols = (runs.c.id, runs.c.name, runs.c.namespace, runs.c.pipeline, runs.c.created_at)
    q = sa.select(*cols).order_by(runs.c.id.desc()).limit(MAX_CANDIDATES + 1)
    if _HEX_RE.match(handle):
        if len(handle) > 32:
            raise NotFound(f"no run {given!r}")
        if len(handle) < 6:
            raise NotFound(f"run id {given!r} is too short (give at least 6 characters)")
        q = q.where(runs.c.id.like(handle + "%"))
        what = f"run id prefix {given!r}"
        hint = "give more of the id, or the run's name"
    elif len(handle) <= MAX_RUN_NAME:
        q = q.where(runs.c.name == handle)
        what = f"run name {given!r}"
        hint = "the name is used in several namespaces: give the run's id"
    else:
        raise NotFound(f"no run {given!r}")
    rows = conn.execute(q).all()
    if not rows:
        raise NotFound(f"no run {given!r}")
    if len(rows) > 1:
        listed = [
            {"id": r.id, "name": r.name, "namespace": r.namespace, "pipeline": r.pipeline,
             "created_at": r.created_at.isoformat()}
            for r in rows[:MAX_CANDIDATES]
        ]  # fmt: skip
        more = "" if len(rows) <= MAX_CANDIDATES else f" (the {MAX_CANDIDATES} newest listed)"
        raise Ambiguous(
            f"{what} matches several runs{more}: {hint}",
            listed,
        )
    return str(rows[0].id)


def run_state(conn: Connection, run_id: str) -> str | None:
    """The state of a run (None if there is no such run)."""
    state = conn.execute(sa.select(runs.c.state).where(runs.c.id == run_id)).scalar()
    return None if state is None else str(state)


def run_outputs(conn: Connection, run_id: str, step: str | None = None) -> dict[str, Any]:
    """The output of every step of a run that produced one (of ``step``
    only, when given: ``NotFound`` naming the run's steps when it has no
    such step)."""
    q = sa.select(nodes.c.name, nodes.c.output).where(
        nodes.c.run_id == run_id, nodes.c.has_output.is_(True)
    )
    if step is not None:
        names = list(
            conn.execute(
                sa.select(nodes.c.name).where(nodes.c.run_id == run_id).order_by(nodes.c.id)
            ).scalars()
        )
        if step not in names:
            raise NotFound(f"run {run_id} has no step {step!r} (steps: {', '.join(names)})")
        q = q.where(nodes.c.name == step)
    return {r.name: r.output for r in conn.execute(q.order_by(nodes.c.id))}


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
    attempt: int | None = None,
    after_id: int = 0,
    limit: int = 1000,
    tail: int | None = None,
) -> list[dict[str, Any]]:
    """A run's log lines in order: those after ``after_id`` (at most
    ``limit``), or the last ``tail``; of one step and/or one attempt."""
    q = sa.select(logs).where(logs.c.run_id == run_id, logs.c.id > after_id)
    if node:
        q = q.where(logs.c.node == node)
    if attempt is not None:
        q = q.where(logs.c.attempt == attempt)
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


# -- pipelines -------------------------------------------------------------------


def pipeline_version(
    conn: Connection, namespace: str, name: str, version: str | None = None
) -> tuple[PipelineVersion, dt.datetime]:
    """A stored version of a pipeline (the newest when ``version`` is None) and
    the time it was registered."""
    if version is None:
        pv = latest(conn, namespace, name)
    else:
        vid = conn.execute(
            sa.select(pipeline_versions.c.id)
            .join(pipelines, pipelines.c.id == pipeline_versions.c.pipeline_id)
            .where(
                pipelines.c.namespace == namespace,
                pipelines.c.name == name,
                pipeline_versions.c.version == version,
            )
        ).scalar()
        if vid is None:
            latest(conn, namespace, name)  # NotFound (with hints) if no such pipeline
            raise NotFound(f"pipeline {namespace}/{name} has no version {version!r}")
        pv = PipelineVersion(vid, namespace, name, version, spec_of_version(conn, vid))
    created = conn.execute(
        sa.select(pipeline_versions.c.created_at).where(pipeline_versions.c.id == pv.id)
    ).scalar_one()
    return pv, created


def list_versions(conn: Connection, namespace: str, name: str) -> list[dict[str, Any]]:
    """Every version of a pipeline, newest first (NotFound if no such pipeline)."""
    rows = conn.execute(
        sa.select(pipeline_versions.c.version, pipeline_versions.c.created_at)
        .join(pipelines, pipelines.c.id == pipeline_versions.c.pipeline_id)
        .where(pipelines.c.namespace == namespace, pipelines.c.name == name)
        .order_by(pipeline_versions.c.id.desc())
    ).all()
    if not rows:
        latest(conn, namespace, name)  # raises NotFound with the namespace's pipelines
    return [{"version": r.version, "created_at": r.created_at} for r in rows]

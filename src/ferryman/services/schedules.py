"""Schedules: create, edit, pause, resume, delete, read; and the pipelines'
declared schedules reconciled on deploy.

A schedule's ``cursor`` says that every tick at or before it has been
decided; the scheduler (``services/ticks.py``) decides the ones after it.
Nothing here ever moves the cursor back: creating, resuming or editing a
schedule sets it to *now* at the earliest, so none of them backfills
(``ticks.backfill`` is the one way to ask for past ticks).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.engine import Connection

from ferryman.domain.params import validate_params
from ferryman.domain.schedules import ScheduleSpec, due_at, next_tick
from ferryman.errors import Conflict, InvalidInput, NotFound
from ferryman.services.catalog import latest
from ferryman.store.engine import SCHEDULE_CHANNEL, Store
from ferryman.store.tables import new_id, runs, schedule_ticks, schedules, utcnow

#: Fields a change of which re-times the schedule (the cursor moves to now).
TIMING = frozenset(
    {"cron", "interval", "timezone", "start_at", "end_at", "on_missing_time", "on_repeated_time"}
)


@dataclass(frozen=True)
class Schedule:
    """A stored schedule."""

    id: str
    namespace: str
    spec: ScheduleSpec
    source: str
    cursor: dt.datetime
    next_due_at: dt.datetime | None
    buffered: int
    created_by: str | None
    created_at: dt.datetime
    updated_at: dt.datetime

    @property
    def name(self) -> str:
        """The schedule's name (unique in its namespace)."""
        return self.spec.name

    def as_dict(self) -> dict[str, Any]:
        """The schedule as the API shows it."""
        return {
            "id": self.id,
            "namespace": self.namespace,
            **self.spec.model_dump(mode="json"),
            "source": self.source,
            "next_fire_at": self.next_due_at,
            "buffered": self.buffered,
            "created_by": self.created_by,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


def parse_spec(raw: Mapping[str, Any]) -> ScheduleSpec:
    """A ``ScheduleSpec`` from user input; ``InvalidInput`` naming every bad field."""
    try:
        return ScheduleSpec.model_validate(dict(raw))
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "schedule"
            message = str(err["msg"]).removeprefix("Value error, ")
            problems.append(f"{where}: {message}")
        raise InvalidInput("invalid schedule: " + "; ".join(problems)) from None


def from_row(row: Any) -> Schedule:
    """A ``Schedule`` from a row of ``schedules``."""
    spec = ScheduleSpec.model_validate({**row.spec, "paused": bool(row.paused)})
    return Schedule(
        row.id,
        row.namespace,
        spec,
        row.source,
        row.cursor,
        row.next_due_at,
        row.buffered,
        row.created_by,
        row.created_at,
        row.updated_at,
    )


def next_due(spec: ScheduleSpec, cursor: dt.datetime) -> dt.datetime | None:
    """When the first tick after ``cursor`` is due (None: never; paused: None)."""
    if spec.paused:
        return None
    tick = next_tick(spec, cursor)
    return None if tick is None else due_at(spec, tick)


def check_params(conn: Connection, namespace: str, spec: ScheduleSpec) -> None:
    """The schedule's pipeline exists and its parameters are valid for the
    newest version (a ``json_config`` is checked against its schema), so a bad
    schedule is refused when saved rather than failing at every tick."""
    try:
        pv = latest(conn, namespace, spec.pipeline)
    except NotFound:
        raise InvalidInput(
            f"schedule {spec.name!r}: no pipeline {spec.pipeline!r} in namespace "
            f"{namespace!r} (deploy it first)"
        ) from None
    validate_params(pv.spec, spec.params)


def _stored(spec: ScheduleSpec) -> dict[str, Any]:
    return spec.model_dump(mode="json", exclude={"paused"})


def get(conn: Connection, namespace: str, name: str) -> Schedule:
    """The schedule ``namespace/name``; ``NotFound`` if there is none."""
    row = conn.execute(
        sa.select(schedules).where(schedules.c.namespace == namespace, schedules.c.name == name)
    ).first()
    if row is None:
        raise NotFound(f"no schedule {name!r} in namespace {namespace!r}")
    return from_row(row)


def list_schedules(
    conn: Connection, namespace: str | None = None, pipeline: str | None = None
) -> list[Schedule]:
    """Schedules, by namespace and name."""
    q = sa.select(schedules).order_by(schedules.c.namespace, schedules.c.name)
    if namespace is not None:
        q = q.where(schedules.c.namespace == namespace)
    if pipeline is not None:
        q = q.where(schedules.c.pipeline == pipeline)
    return [from_row(r) for r in conn.execute(q)]


def create(
    store: Store,
    namespace: str,
    spec: ScheduleSpec,
    *,
    user: str | None = None,
    source: str = "api",
    now: dt.datetime | None = None,
) -> Schedule:
    """Save a new schedule; its first tick is the first one after now.
    ``Conflict`` if the name is taken in the namespace."""
    now = now or utcnow()
    with store.write() as conn:
        check_params(conn, namespace, spec)
        sid = insert(conn, namespace, spec, source, user, now)
        store.notify(conn, SCHEDULE_CHANNEL)
    with store.read() as conn:
        return from_row(conn.execute(sa.select(schedules).where(schedules.c.id == sid)).one())


def insert(
    conn: Connection,
    namespace: str,
    spec: ScheduleSpec,
    source: str,
    user: str | None,
    now: dt.datetime,
) -> str:
    """Insert a schedule (in the caller's transaction; its parameters already
    checked); returns its id. ``Conflict`` if the name is taken."""
    taken = conn.execute(
        sa.select(schedules.c.id).where(
            schedules.c.namespace == namespace, schedules.c.name == spec.name
        )
    ).first()
    if taken is not None:
        raise Conflict(f"schedule {spec.name!r} already exists in namespace {namespace!r}")
    sid = new_id()
    conn.execute(
        sa.insert(schedules).values(
            id=sid,
            namespace=namespace,
            name=spec.name,
            pipeline=spec.pipeline,
            spec=_stored(spec),
            paused=spec.paused,
            source=source,
            cursor=now,
            next_due_at=next_due(spec, now),
            buffered=0,
            created_by=user,
            created_at=now,
            updated_at=now,
        )
    )
    return sid


def update(
    store: Store,
    namespace: str,
    name: str,
    changes: Mapping[str, Any],
    *,
    now: dt.datetime | None = None,
) -> Schedule:
    """Change fields of a schedule (``changes`` as in the spec; ``name`` cannot
    change). A change of timing or a resume moves the cursor to now: past
    ticks are never fired by an edit."""
    now = now or utcnow()
    if "name" in changes and changes["name"] != name:
        raise InvalidInput("name: a schedule cannot be renamed (delete it and create another)")
    with store.write() as conn:
        row = _locked(conn, namespace, name)
        old = from_row(row)
        spec = parse_spec({**old.spec.model_dump(mode="json"), **changes})
        check_params(conn, namespace, spec)
        cursor = row.cursor
        retimed = any(k in TIMING for k in changes) or (old.spec.paused and not spec.paused)
        if retimed:
            cursor = max(cursor, now)
        values: dict[str, Any] = {
            "spec": _stored(spec),
            "pipeline": spec.pipeline,
            "paused": spec.paused,
            "cursor": cursor,
            "next_due_at": next_due(spec, cursor),
            "updated_at": now,
        }
        if spec.paused and not old.spec.paused:
            values["buffered"] = 0  # buffered ticks are dropped (recorded) on pause
            _drop_buffered(conn, row.id, "the schedule was paused")
        conn.execute(sa.update(schedules).where(schedules.c.id == row.id).values(**values))
        store.notify(conn, SCHEDULE_CHANNEL)
    with store.read() as conn:
        return get(conn, namespace, name)


def set_paused(store: Store, namespace: str, name: str, paused: bool) -> Schedule:
    """Pause or resume; resuming never backfills the ticks of the pause."""
    return update(store, namespace, name, {"paused": paused})


def delete(store: Store, namespace: str, name: str) -> None:
    """Delete a schedule and its tick records (its runs stay)."""
    with store.write() as conn:
        row = _locked(conn, namespace, name)
        conn.execute(sa.delete(schedule_ticks).where(schedule_ticks.c.schedule_id == row.id))
        conn.execute(sa.delete(schedules).where(schedules.c.id == row.id))


def _locked(conn: Connection, namespace: str, name: str) -> Any:
    q = sa.select(schedules).where(schedules.c.namespace == namespace, schedules.c.name == name)
    if conn.dialect.name == "postgresql":
        q = q.with_for_update()
    row = conn.execute(q).first()
    if row is None:
        raise NotFound(f"no schedule {name!r} in namespace {namespace!r}")
    return row


def _drop_buffered(conn: Connection, schedule_id: str, reason: str) -> None:
    conn.execute(
        sa.update(schedule_ticks)
        .where(schedule_ticks.c.schedule_id == schedule_id, schedule_ticks.c.state == "buffered")
        .values(state="skipped", reason=reason)
    )


def tick_history(conn: Connection, schedule_id: str, limit: int = 50) -> list[dict[str, Any]]:
    """The newest ticks of a schedule with their runs' names and states."""
    q = (
        sa.select(
            schedule_ticks.c.fire_time,
            schedule_ticks.c.state,
            schedule_ticks.c.kind,
            schedule_ticks.c.reason,
            schedule_ticks.c.run_id,
            runs.c.name.label("run_name"),
            runs.c.state.label("run_state"),
        )
        .select_from(schedule_ticks.outerjoin(runs, runs.c.id == schedule_ticks.c.run_id))
        .where(schedule_ticks.c.schedule_id == schedule_id)
        .order_by(schedule_ticks.c.fire_time.desc())
        .limit(limit)
    )
    return [dict(r._mapping) for r in conn.execute(q)]


def reconcile(
    conn: Connection,
    namespace: str,
    pipeline: str,
    declared: Sequence[ScheduleSpec],
    *,
    now: dt.datetime | None = None,
) -> dict[str, list[str]]:
    """Make the schedules a pipeline declares (``source="pipeline"``) match
    ``declared``, by name, inside the deploy's transaction: new ones are
    created, changed ones updated (a re-timing never backfills), the ones no
    longer declared deleted. Schedules made through the API are left alone;
    a declared name taken by one of them is a ``Conflict``. A declared
    schedule's ``paused`` is kept as an operator set it."""
    now = now or utcnow()
    rows = {
        r.name: r
        for r in conn.execute(sa.select(schedules).where(schedules.c.namespace == namespace))
    }
    done: dict[str, list[str]] = {"created": [], "updated": [], "deleted": []}
    names = set()
    for spec in declared:
        if spec.pipeline != pipeline:
            spec = spec.model_copy(update={"pipeline": pipeline})
        names.add(spec.name)
        row = rows.get(spec.name)
        if row is None:
            check_params(conn, namespace, spec)
            insert(conn, namespace, spec, "pipeline", None, now)
            done["created"].append(spec.name)
            continue
        if row.source != "pipeline" or row.pipeline != pipeline:
            raise Conflict(
                f"schedule {spec.name!r} declared by pipeline {pipeline!r} already exists in "
                f"namespace {namespace!r} (made through the API or by another pipeline)"
            )
        old = from_row(row)
        spec = spec.model_copy(update={"paused": old.spec.paused})
        if spec == old.spec:
            continue
        check_params(conn, namespace, spec)
        cursor = row.cursor
        if any(getattr(spec, k) != getattr(old.spec, k) for k in TIMING):
            cursor = max(cursor, now)
        conn.execute(
            sa.update(schedules)
            .where(schedules.c.id == row.id)
            .values(
                spec=_stored(spec),
                cursor=cursor,
                next_due_at=next_due(spec, cursor),
                updated_at=now,
            )
        )
        done["updated"].append(spec.name)
    for name, row in rows.items():
        if row.source == "pipeline" and row.pipeline == pipeline and name not in names:
            conn.execute(sa.delete(schedule_ticks).where(schedule_ticks.c.schedule_id == row.id))
            conn.execute(sa.delete(schedules).where(schedules.c.id == row.id))
            done["deleted"].append(name)
    return done

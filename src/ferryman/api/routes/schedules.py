"""Schedules (SPEC §6, docs/schedules.md).

Who may do what: **viewers** list and read schedules, their coming fire
times and their ticks; **operators** create, change, pause, resume, delete,
run now and backfill (a schedule starts runs, as an operator may).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response

from ferryman.api.deps import Operator, RunsDep, StoreDep, Viewer
from ferryman.api.routes.pipelines import NAME_HELP, NAME_PATTERN, Namespace
from ferryman.api.schedule_schemas import (
    Backfill,
    FireTime,
    NextFires,
    ScheduleCreate,
    ScheduleList,
    SchedulePublic,
    ScheduleUpdate,
    TickList,
    TickOutcome,
    TickPublic,
)
from ferryman.domain.schedules import next_ticks
from ferryman.services import schedules as svc
from ferryman.services.ticks import Ticks

router = APIRouter(tags=["schedules"])

ScheduleName = Annotated[str, Path(pattern=NAME_PATTERN, description=f"Schedule: {NAME_HELP}")]
_404: dict[int | str, dict[str, Any]] = {404: {"description": "no such schedule"}}
_WRITE: dict[int | str, dict[str, Any]] = {
    **_404,
    422: {"description": "an invalid schedule, or parameters its pipeline refuses"},
}


def _public(s: svc.Schedule) -> SchedulePublic:
    return SchedulePublic.model_validate(s.as_dict())


@router.get("/schedules", response_model=ScheduleList, summary="Schedules of every namespace")
def list_all(
    _: Viewer,
    store: StoreDep,
    namespace: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
    pipeline: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
) -> ScheduleList:
    with store.read() as conn:
        items = svc.list_schedules(conn, namespace, pipeline)
    return ScheduleList(items=[_public(s) for s in items])


@router.get(
    "/namespaces/{ns}/schedules", response_model=ScheduleList, summary="Schedules of a namespace"
)
def list_namespace(ns: Namespace, _: Viewer, store: StoreDep) -> ScheduleList:
    with store.read() as conn:
        items = svc.list_schedules(conn, ns)
    return ScheduleList(items=[_public(s) for s in items])


@router.post(
    "/namespaces/{ns}/schedules",
    status_code=201,
    response_model=SchedulePublic,
    summary="Create a schedule (operators); it never fires past ticks",
    responses={409: {"description": "the name is taken"}, **_WRITE},
)
def create(ns: Namespace, body: ScheduleCreate, who: Operator, store: StoreDep) -> SchedulePublic:
    spec = svc.parse_spec(body.model_dump(mode="json"))
    return _public(svc.create(store, ns, spec, user=who.username))


@router.get(
    "/namespaces/{ns}/schedules/{name}",
    response_model=SchedulePublic,
    summary="A schedule",
    responses=_404,
)
def get(ns: Namespace, name: ScheduleName, _: Viewer, store: StoreDep) -> SchedulePublic:
    with store.read() as conn:
        return _public(svc.get(conn, ns, name))


@router.patch(
    "/namespaces/{ns}/schedules/{name}",
    response_model=SchedulePublic,
    summary="Change a schedule (operators); a re-timing never fires past ticks",
    responses=_WRITE,
)
def update(
    ns: Namespace, name: ScheduleName, body: ScheduleUpdate, _: Operator, store: StoreDep
) -> SchedulePublic:
    return _public(svc.update(store, ns, name, body.changes()))


@router.post(
    "/namespaces/{ns}/schedules/{name}/pause",
    response_model=SchedulePublic,
    summary="Pause a schedule (operators)",
    responses=_404,
)
def pause(ns: Namespace, name: ScheduleName, _: Operator, store: StoreDep) -> SchedulePublic:
    return _public(svc.set_paused(store, ns, name, True))


@router.post(
    "/namespaces/{ns}/schedules/{name}/resume",
    response_model=SchedulePublic,
    summary="Resume a schedule (operators); the ticks of the pause are not fired",
    responses=_404,
)
def resume(ns: Namespace, name: ScheduleName, _: Operator, store: StoreDep) -> SchedulePublic:
    return _public(svc.set_paused(store, ns, name, False))


@router.delete(
    "/namespaces/{ns}/schedules/{name}",
    status_code=204,
    summary="Delete a schedule and its tick records (operators); its runs stay",
    responses=_404,
)
def delete(ns: Namespace, name: ScheduleName, _: Operator, store: StoreDep) -> Response:
    svc.delete(store, ns, name)
    return Response(status_code=204)


@router.get(
    "/namespaces/{ns}/schedules/{name}/next",
    response_model=NextFires,
    summary="The coming fire times, in the schedule's time zone and in UTC",
    responses=_404,
)
def upcoming(
    ns: Namespace,
    name: ScheduleName,
    _: Viewer,
    store: StoreDep,
    n: Annotated[int, Query(ge=1, le=1000)] = 10,
) -> NextFires:
    with store.read() as conn:
        s = svc.get(conn, ns, name)
    now = dt.datetime.now(dt.UTC)
    zone = s.spec.zone
    items = [FireTime(local=t.astimezone(zone), utc=t) for t in next_ticks(s.spec, now, n)]
    return NextFires(timezone=s.spec.timezone, items=items)


@router.get(
    "/namespaces/{ns}/schedules/{name}/ticks",
    response_model=TickList,
    summary="A schedule's newest ticks and their runs",
    responses=_404,
)
def ticks(
    ns: Namespace,
    name: ScheduleName,
    _: Viewer,
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> TickList:
    with store.read() as conn:
        s = svc.get(conn, ns, name)
        rows = svc.tick_history(conn, s.id, limit)
    return TickList(items=[TickPublic.model_validate(r) for r in rows])


@router.post(
    "/namespaces/{ns}/schedules/{name}/run",
    status_code=201,
    response_model=TickOutcome,
    summary="Start one run of the schedule now, with its parameters (operators)",
    responses=_WRITE,
)
def run_now(
    ns: Namespace, name: ScheduleName, _: Operator, store: StoreDep, runs: RunsDep
) -> TickOutcome:
    run_id = Ticks(store, runs).run_now(ns, name)
    return TickOutcome(fired=1, run_ids=[run_id])


@router.post(
    "/namespaces/{ns}/schedules/{name}/backfill",
    response_model=TickOutcome,
    summary="Fire the past ticks of a range that were never decided (operators)",
    responses=_WRITE,
)
def backfill(
    ns: Namespace, name: ScheduleName, body: Backfill, _: Operator, store: StoreDep, runs: RunsDep
) -> TickOutcome:
    r = Ticks(store, runs).backfill(ns, name, body.start, body.end, overlap=body.overlap)
    return TickOutcome(
        fired=r.fired, skipped=r.skipped, buffered=r.buffered, failed=r.failed, run_ids=r.run_ids
    )

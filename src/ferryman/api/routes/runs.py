"""Runs: create, list, get, cancel, re-run; outputs; logs (JSON and
server-sent events) and events.

Every route is a plain ``def``: FastAPI runs it in its thread pool and the
store is synchronous SQLAlchemy. Routes return ready-made JSON responses
(``respond``): FastAPI would otherwise validate the returned model again, in
another trip through the thread pool. The log stream is asynchronous, so a
client following logs holds no thread while it waits (each poll of the
database runs in the pool for a moment).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.responses import StreamingResponse

from ferryman.api.deps import Operator, RunsDep, SettingsDep, StoreDep, Viewer
from ferryman.api.routes.pipelines import (
    NAME_PATTERN,
    Namespace,
    PipelineName,
    check_size,
    nul_paths,
    respond,
)
from ferryman.api.schemas import (
    EventList,
    EventPublic,
    LogLinePublic,
    LogList,
    RunCounts,
    RunCreate,
    RunCreated,
    RunDetail,
    RunList,
    RunOutputs,
    RunPublic,
)
from ferryman.domain.options import Origin
from ferryman.domain.params import ParamError, ParamsInvalid
from ferryman.domain.states import RunState
from ferryman.errors import InvalidInput, NotFound
from ferryman.http import destination_policy
from ferryman.redaction import SHAPES_ONLY
from ferryman.services import queries, triggers
from ferryman.services.auth import Principal
from ferryman.services.runs import RunService
from ferryman.services.subscriptions import check_destination
from ferryman.settings import Settings
from ferryman.store.engine import Store

router = APIRouter(tags=["runs"])

#: How often a log stream looks for new lines, and how long it may stay silent.
POLL_SECONDS = 0.3
KEEPALIVE_SECONDS = 15.0
STREAM_BATCH = 500

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="The same key (per namespace) returns the same run instead of a new one",
    ),
]
RunId = Annotated[
    str,
    Path(
        max_length=64,
        description="A run: its id (32 hex digits), a unique prefix of 6+, or its name",
    ),
]
NameFilter = Annotated[str | None, Query(pattern=NAME_PATTERN)]
#: The largest log line id or event seq (32-bit integer columns).
MAX_POSITION = 2**31 - 1
#: ``?after=``: a log line id or event seq; past the largest one is a 422.
After = Annotated[
    int, Query(ge=0, le=MAX_POSITION, description="Only items with a larger id (seq)")
]
# What Last-Event-ID may be: an id this server sent (ASCII digits; str.isdigit
# also accepts '²' and other digits int() refuses).
_EVENT_ID = re.compile(r"[0-9]{1,10}")


def resume_after(last_event_id: str | None, after: int) -> int:
    """Where a log stream resumes: after ``Last-Event-ID`` when it is an id
    this server could have sent (1 to 10 ASCII digits, at most
    ``MAX_POSITION``), else after ``after``: anything else in the header is
    ignored, as a stream's client only echoes what it was sent."""
    value = (last_event_id or "").strip()
    if _EVENT_ID.fullmatch(value) and int(value) <= MAX_POSITION:
        return max(after, int(value))
    return after


def _check_text(name: str, value: str | None) -> None:
    if value is not None and "\x00" in value:
        raise InvalidInput(f"{name} contains a NUL character", [{"path": name, "reason": "NUL"}])


def _existing(conn: Any, run_id: str) -> tuple[str, str]:
    rid = queries.resolve_run_id(conn, run_id)
    state = queries.run_state(conn, rid)
    if state is None:
        raise NotFound(f"no run {run_id!r}")
    return rid, state


def start_run(
    *,
    runs: RunService,
    settings: Settings,
    principal: Principal,
    namespace: str,
    pipeline: str,
    body: RunCreate,
    idempotency_key: str | None,
    via: str,
) -> Response:
    """Start a run of the newest version of ``pipeline`` (``RunService.start``).

    201 with the new run, 200 with the run an idempotency key already named. A
    key re-used for another pipeline or other parameters is a 409: silently
    returning an unrelated run would be worse.
    """
    check_size("params", body.params, settings.api.max_params_bytes, "FERRYMAN_MAX_PARAMS_BYTES")
    bad = nul_paths(body.params)
    if bad:
        raise ParamsInvalid([ParamError(p, "contains a NUL character") for p in bad])
    if body.webhook_url is not None:
        # Early answer; the dispatcher asks the policy again, after resolving.
        check_destination(str(body.webhook_url), destination_policy(settings), "webhook_url")
    started = runs.start(
        namespace,
        pipeline,
        body.params,
        options=body.options(),
        origin=Origin(kind=via, user=principal.username),
        labels=body.labels,
        idempotency_key=idempotency_key,
    )
    return respond(
        RunCreated.of(started.record, settings.base_url, started.created),
        201 if started.created else 200,
    )


@router.post(
    "/namespaces/{ns}/pipelines/{name}/runs",
    response_model=RunCreated,
    status_code=201,
    summary="Start a run",
    responses={
        200: {"description": "The run this Idempotency-Key already created", "model": RunCreated},
        404: {"description": "No such pipeline"},
        409: {"description": "Idempotency-Key re-used with a different request"},
        422: {"description": "Invalid parameters (every error, with its path)"},
    },
)
def create_run(
    ns: Namespace,
    name: PipelineName,
    runs: RunsDep,
    settings: SettingsDep,
    principal: Operator,
    idempotency_key: IdempotencyKey = None,
    body: RunCreate | None = None,
) -> Response:
    """Validate the parameters and queue a run of the pipeline's newest version."""
    return start_run(
        runs=runs,
        settings=settings,
        principal=principal,
        namespace=ns,
        pipeline=name,
        body=body or RunCreate(),
        idempotency_key=idempotency_key,
        via="api",
    )


def _labels(raw: list[str] | None) -> list[tuple[str, str]]:
    out = []
    for item in raw or ():
        key, sep, value = item.partition(":")
        if not sep or not key:
            raise InvalidInput(
                f"invalid label filter {item!r}: use key:value",
                [{"path": "label", "reason": "use key:value"}],
            )
        _check_text("label", value)
        out.append((key, value))
    return out


@router.get("/runs", response_model=RunList, summary="List runs, newest first")
def list_runs(
    store: StoreDep,
    settings: SettingsDep,
    _: Viewer,
    namespace: NameFilter = None,
    pipeline: NameFilter = None,
    state: Annotated[list[RunState] | None, Query(description="Repeatable: any of")] = None,
    label: Annotated[
        list[str] | None, Query(description="key:value; repeatable: all must match")
    ] = None,
    created_after: Annotated[dt.datetime | None, Query(description="Inclusive")] = None,
    created_before: Annotated[dt.datetime | None, Query(description="Exclusive")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=64, description="next_cursor of a page")] = None,
    include_params: Annotated[
        bool, Query(description="Include each run's parameters (left out by default)")
    ] = False,
) -> Response:
    """Runs matching every filter given, newest first, one page at a time;
    without ``include_params`` each run's ``params`` is null (they can be
    large; ``GET /runs/{id}`` has them)."""
    labels = _labels(label)
    with store.read() as conn:
        rows, next_cursor = queries.page_runs(
            conn,
            limit=limit,
            cursor=cursor,
            namespace=namespace,
            pipeline=pipeline,
            states=[s.value for s in state or ()],
            labels=labels,
            created_after=created_after,
            created_before=created_before,
            with_params=include_params,
        )
    base = settings.base_url
    return respond(
        RunList(items=[RunPublic.from_row(r, base) for r in rows], next_cursor=next_cursor)
    )


@router.get("/runs/counts", response_model=RunCounts, summary="How many runs in each state")
def count_runs(
    store: StoreDep,
    _: Viewer,
    namespace: NameFilter = None,
    pipeline: NameFilter = None,
    label: Annotated[list[str] | None, Query(description="key:value; repeatable")] = None,
    created_after: dt.datetime | None = None,
    created_before: dt.datetime | None = None,
) -> Response:
    """Counts by state of the runs matching every filter given."""
    labels = _labels(label)
    with store.read() as conn:
        counts = queries.count_runs(
            conn,
            namespace=namespace,
            pipeline=pipeline,
            labels=labels,
            created_after=created_after,
            created_before=created_before,
        )
    return respond(RunCounts(counts=counts, total=sum(counts.values())))


@router.get("/runs/{run_id}", response_model=RunDetail, summary="A run and its steps")
def get_run(run_id: RunId, store: StoreDep, settings: SettingsDep, _: Viewer) -> Response:
    """The run with every step's state, attempts, errors and durations."""
    with store.read() as conn:
        row = queries.get_run(conn, queries.resolve_run_id(conn, run_id))
        row["triggered"] = triggers.firings_of(conn, row["id"])
    return respond(RunDetail.from_row(row, settings.base_url))


@router.post(
    "/runs/{run_id}/cancel",
    response_model=RunPublic,
    status_code=202,
    summary="Cancel a run",
    responses={409: {"description": "The run has already ended"}},
)
def cancel_run(
    run_id: RunId, store: StoreDep, runs: RunsDep, settings: SettingsDep, _: Operator
) -> Response:
    """Steps not started are cancelled at once; running ones are stopped (graceful,
    then forced) and the run becomes ``cancelled`` when the last has ended."""
    rid = queries.full_run_id(run_id)
    if rid is None:
        with store.read() as conn:
            rid = queries.resolve_run_id(conn, run_id)
    runs.cancel(rid)
    with store.read() as conn:
        row = queries.get_run(conn, rid, with_nodes=False)
    return respond(RunPublic.from_row(row, settings.base_url), 202)


@router.post(
    "/runs/{run_id}/rerun",
    response_model=RunCreated,
    status_code=201,
    summary="Re-run a failed or cancelled run from its failed steps",
    responses={409: {"description": "The run has not failed or been cancelled"}},
)
def rerun(
    run_id: RunId, store: StoreDep, runs: RunsDep, settings: SettingsDep, _: Operator
) -> Response:
    """A new run of the same version and parameters that re-uses the outputs of
    the steps that succeeded."""
    rid = queries.full_run_id(run_id)
    if rid is None:
        with store.read() as conn:
            rid = queries.resolve_run_id(conn, run_id)
    new_id = runs.rerun(rid)
    with store.read() as conn:
        row = queries.get_run(conn, new_id, with_nodes=False)
    return respond(RunCreated.of(row, settings.base_url, True), 201)


@router.get("/runs/{run_id}/outputs", response_model=RunOutputs, summary="Step outputs")
def get_outputs(
    run_id: RunId,
    store: StoreDep,
    _: Viewer,
    step: Annotated[
        str | None, Query(pattern=NAME_PATTERN, description="Only this step's output")
    ] = None,
) -> Response:
    """The output of every step that produced one (so far), or of ``step``
    only (404 when the run has no such step; empty when it has no output)."""
    with store.read() as conn:
        rid, _state = _existing(conn, run_id)
        outputs = queries.run_outputs(conn, rid, step)
    return respond(RunOutputs(run_id=rid, outputs=outputs))


@router.get("/runs/{run_id}/logs", response_model=LogList, summary="Log lines of a run")
def get_logs(
    run_id: RunId,
    store: StoreDep,
    _: Viewer,
    step: Annotated[str | None, Query(max_length=128, description="Only this step")] = None,
    after: After = 0,
    limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
    tail: Annotated[int | None, Query(ge=1, le=10000, description="The last N lines")] = None,
    attempt: Annotated[int | None, Query(ge=1, description="Only this attempt's lines")] = None,
) -> Response:
    """Lines in order. ``run_state`` is read before the lines: if it is final and
    fewer than ``limit`` lines came back, there are no more."""
    _check_text("step", step)
    with store.read() as conn:
        rid, state = _existing(conn, run_id)
        rows = queries.get_logs(
            conn, rid, node=step, attempt=attempt, after_id=after, limit=limit, tail=tail
        )
    return respond(
        LogList(
            items=[LogLinePublic.model_validate(r) for r in rows],
            next_after=rows[-1]["id"] if rows else after,
            run_state=RunState(state),
        )
    )


def _poll(
    store: Store, run_id: str, step: str | None, after: int
) -> tuple[str | None, list[dict[str, Any]]]:
    # The state is read first: when it is final, every line was written before it.
    with store.read() as conn:
        state = queries.run_state(conn, run_id)
        rows = queries.get_logs(conn, run_id, node=step, after_id=after, limit=STREAM_BATCH)
    return state, rows


async def _log_events(
    request: Request, store: Store, run_id: str, step: str | None, after: int
) -> AsyncIterator[str]:
    yield f": logs of run {run_id}\nretry: 2000\n\n"
    last, quiet_since = after, time.monotonic()
    while True:
        state, rows = await anyio.to_thread.run_sync(_poll, store, run_id, step, last)
        for r in rows:
            line = LogLinePublic.model_validate(r).model_dump_json()
            yield f"id: {r['id']}\ndata: {line}\n\n"
        if rows:
            last, quiet_since = rows[-1]["id"], time.monotonic()
        if len(rows) >= STREAM_BATCH:
            continue
        if state is None or RunState(state).terminal:
            yield f"event: end\ndata: {json.dumps({'run_id': run_id, 'state': state})}\n\n"
            return
        if await request.is_disconnected():
            return
        if time.monotonic() - quiet_since >= KEEPALIVE_SECONDS:
            yield ": keep-alive\n\n"
            quiet_since = time.monotonic()
        await anyio.sleep(POLL_SECONDS)


@router.get(
    "/runs/{run_id}/logs/stream",
    summary="Follow the logs of a run (server-sent events)",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "``id:`` is the log line id, ``data:`` the line as JSON "
            "(LogLinePublic); a final ``event: end`` when the run is over",
            "content": {"text/event-stream": {}},
        }
    },
)
def stream_logs(
    run_id: RunId,
    request: Request,
    store: StoreDep,
    _: Viewer,
    step: Annotated[str | None, Query(max_length=128)] = None,
    after: After = 0,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=32)] = None,
) -> StreamingResponse:
    """New lines as they are written; resumes after ``Last-Event-ID`` (or
    ``after``); ends with ``event: end`` once the run is over and drained.
    A ``Last-Event-ID`` that is not a line id (ASCII digits) is ignored."""
    _check_text("step", step)
    with store.read() as conn:
        rid, _state = _existing(conn, run_id)
    after = resume_after(last_event_id, after)
    return StreamingResponse(
        _log_events(request, store, rid, step, after),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/runs/{run_id}/events", response_model=EventList, summary="Events of a run")
def get_events(
    run_id: RunId,
    store: StoreDep,
    _: Viewer,
    after: After = 0,
    limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
) -> Response:
    """Lifecycle events of the run in order."""
    with store.read() as conn:
        rid, _state = _existing(conn, run_id)
        rows = queries.get_events(conn, rid, after_seq=after, limit=limit)
    return respond(
        EventList(
            items=[EventPublic.model_validate(_masked_event(r)) for r in rows],
            next_after=rows[-1]["seq"] if rows else after,
        )
    )


def _masked_event(row: dict[str, Any]) -> dict[str, Any]:
    # Token shapes, whatever recorded the event (declared secrets were masked
    # by the worker when it recorded a step's error).
    if row.get("message"):
        row = {**row, "message": SHAPES_ONLY.text(row["message"])}
    if row.get("data"):
        row = {**row, "data": SHAPES_ONLY.value(row["data"])}
    return row

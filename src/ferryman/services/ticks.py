"""Firing schedules' ticks: the scheduler's use case, backfills and "run now".

A tick is **claimed** by inserting its ``(schedule, fire time)`` row into
``schedule_ticks`` with ``ON CONFLICT DO NOTHING``; only the transaction
whose insert returned the row goes on, and it creates the tick's run
(``creation.create_run``) and moves the schedule's cursor in the same
transaction. So however many schedulers run, and whatever restarts, edits
or kills happen, a tick has one row and at most one run. On PostgreSQL the
schedule's row is also locked (``FOR UPDATE SKIP LOCKED``) while its ticks
are decided, so two schedulers never both work on one schedule and the
overlap policy sees a consistent picture.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from ferryman.domain.events import EventType
from ferryman.domain.options import Origin
from ferryman.domain.param_errors import ParamsInvalid
from ferryman.domain.params import validate_params
from ferryman.domain.schedules import (
    Overlap,
    TickState,
    decide_overlap,
    due_at,
    plan_ticks,
    ticks_between,
)
from ferryman.domain.states import RunState
from ferryman.errors import Conflict, FerrymanError, InvalidInput
from ferryman.services.catalog import PipelineVersion, latest
from ferryman.services.creation import RunRequest, create_run
from ferryman.services.gate import Tx
from ferryman.services.runs import RunService
from ferryman.services.schedules import Schedule, from_row, get, next_due
from ferryman.store.engine import Store, is_unavailable
from ferryman.store.tables import new_id, runs, schedule_ticks, schedules, utcnow

#: Missed ticks recorded one by one per turn; beyond that one event counts the rest.
MAX_RECORDED_MISSED = 100
#: Label keys every scheduled run carries.
LABEL_SCHEDULE = "ferryman.schedule"
LABEL_TICK = "ferryman.tick"
#: Schedules decided per write transaction (each in a savepoint of its own).
PER_TRANSACTION = 50
log = logging.getLogger(__name__)

# Statements built once (this is the scheduler's hot path).
_MOVE_CURSOR = (
    sa.update(schedules)
    .where(schedules.c.id == sa.bindparam("c_sid"))
    .values(
        cursor=sa.bindparam("c_cursor"),
        next_due_at=sa.bindparam("c_next"),
        buffered=sa.bindparam("c_buffered"),
        updated_at=sa.bindparam("c_now"),
    )
)
_SET_TICK = (
    sa.update(schedule_ticks)
    .where(
        schedule_ticks.c.schedule_id == sa.bindparam("t_sid"),
        schedule_ticks.c.fire_time == sa.bindparam("t_time"),
    )
    .values(
        state=sa.bindparam("t_state"), reason=sa.bindparam("t_reason"), run_id=sa.bindparam("t_run")
    )
)
_RECENT_FIRED = (
    sa.select(schedule_ticks.c.run_id)
    .where(
        schedule_ticks.c.schedule_id == sa.bindparam("a_sid"),
        schedule_ticks.c.state == TickState.FIRED.value,
    )
    .order_by(schedule_ticks.c.fire_time.desc())
    .limit(50)
    .subquery()
)
_ACTIVE_RUNS = sa.select(runs.c.id).where(
    runs.c.id.in_(sa.select(_RECENT_FIRED.c.run_id)),
    runs.c.state.in_([RunState.QUEUED.value, RunState.RUNNING.value]),
)
_CLAIMS: dict[str, Any] = {}


@dataclass
class TurnResult:
    """What one pass over the due schedules did."""

    fired: int = 0
    missed: int = 0
    skipped: int = 0
    buffered: int = 0
    failed: int = 0
    run_ids: list[str] = field(default_factory=list)
    next_due: dt.datetime | None = None  # the earliest next due time (None: nothing)

    def add(self, other: TurnResult) -> None:
        """Count ``other``'s ticks in too."""
        self.fired += other.fired
        self.missed += other.missed
        self.skipped += other.skipped
        self.buffered += other.buffered
        self.failed += other.failed
        self.run_ids += other.run_ids


def _claim_stmt(dialect: str) -> Any:
    stmt = _CLAIMS.get(dialect)
    if stmt is None:
        insert: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
        stmt = (
            insert(schedule_ticks)
            .on_conflict_do_nothing(index_elements=["schedule_id", "fire_time"])
            .returning(schedule_ticks.c.id)
        )
        _CLAIMS[dialect] = stmt
    return stmt


class Ticks:
    """Decides and fires the ticks of schedules (see the module docstring)."""

    def __init__(self, store: Store, runs_service: RunService | None = None, *,
                 late_after: float = 60.0, batch: int = 500) -> None:  # fmt: skip
        self.store = store
        self.runs = runs_service or RunService(store)
        self.late_after = late_after
        self.batch = batch
        # the newest version of each pipeline, read once per transaction
        self._versions: dict[tuple[str, str], PipelineVersion] = {}

    # -- the scheduler's turn --------------------------------------------------------

    def run_due(self, now: dt.datetime | None = None) -> TurnResult:
        """Decide every tick due by ``now`` of every active schedule (fire,
        miss, skip or buffer it), start buffered ticks whose turn has come,
        and tell when the next tick is due."""
        now = now or utcnow()
        result = TurnResult()
        with self.store.read() as conn:
            ids = [
                r.id
                for r in conn.execute(
                    sa.select(schedules.c.id)
                    .where(
                        schedules.c.paused.is_(False),
                        sa.or_(schedules.c.next_due_at <= now, schedules.c.buffered > 0),
                    )
                    .order_by(schedules.c.next_due_at)
                    .limit(self.batch)
                )
            ]
        for i in range(0, len(ids), PER_TRANSACTION):
            self._some(ids[i : i + PER_TRANSACTION], now, result)
        with self.store.read() as conn:
            nxt = conn.execute(
                sa.select(sa.func.min(schedules.c.next_due_at)).where(schedules.c.paused.is_(False))
            ).scalar()
            waiting = conn.execute(
                sa.select(schedules.c.id)
                .where(schedules.c.paused.is_(False), schedules.c.buffered > 0)
                .limit(1)
            ).first()
        if len(ids) >= self.batch or waiting is not None:
            # more to do, or buffered ticks wait for a run to end: look again soon
            soon = now + dt.timedelta(seconds=1)
            nxt = soon if nxt is None else min(nxt, soon)
        result.next_due = nxt
        return result

    def _some(self, ids: list[str], now: dt.datetime, result: TurnResult) -> None:
        """Decide the ticks of some schedules in one write transaction, each in
        a savepoint: one schedule's failure (logged) does not hold up the others."""
        with self.store.write() as conn:
            q = sa.select(schedules).where(schedules.c.id.in_(ids)).order_by(schedules.c.id)
            if conn.dialect.name == "postgresql":
                # another scheduler holds some of them: it decides those
                q = q.with_for_update(skip_locked=True)
            tx = self.runs.tx(conn)
            self._versions = {}
            for row in conn.execute(q).all():
                if row.paused:
                    continue
                part = TurnResult()
                try:
                    with tx.savepoint():
                        sched = from_row(row)
                        buffered = self._start_buffered(tx, sched, part)
                        if row.next_due_at is not None and row.next_due_at <= now:
                            self._decide(tx, sched, buffered, now, part)
                except Exception as exc:
                    if is_unavailable(exc):
                        raise
                    first = (str(exc).strip().splitlines() or [""])[0][:300]
                    log.warning("schedule %s/%s: its ticks were not decided (%s: %s); "
                                "retried next turn", row.namespace, row.name,
                                type(exc).__name__, first)  # fmt: skip
                    continue
                result.add(part)
            tx.flush()
        self.store.wake_local()

    def _decide(
        self, tx: Tx, sched: Schedule, buffered: int, now: dt.datetime, result: TurnResult
    ) -> None:
        spec = sched.spec
        ticks, more = ticks_between(spec, sched.cursor, now, limit=10_000)
        # With jitter a tick can be past but not yet due: stop before it.
        due: list[dt.datetime] = []
        for t in ticks:
            if due_at(spec, t) > now:
                break
            due.append(t)
        if more and due:
            self._missed_summary(tx, sched, sched.cursor, due[0], now)
        plan = plan_ticks(spec, due, now, self.late_after)
        recorded = 0
        for tick, why in plan.missed:
            if recorded >= MAX_RECORDED_MISSED:
                break
            if self._claim(tx.conn, sched.id, tick, TickState.MISSED, why, "schedule", now):
                recorded += 1
                self._event(tx, sched, EventType.SCHEDULE_TICK_MISSED, tick, why)
        result.missed += len(plan.missed)
        if len(plan.missed) > recorded:
            first, last = plan.missed[recorded][0], plan.missed[-1][0]
            self._missed_summary(tx, sched, first - dt.timedelta(microseconds=1), last, now)
        for tick in plan.fire:
            buffered += self._fire(tx, sched, tick, "schedule", spec.overlap, buffered, result)
        cursor = due[-1] if due else sched.cursor
        tx.conn.execute(
            _MOVE_CURSOR,
            {"c_sid": sched.id, "c_cursor": cursor, "c_next": next_due(spec, cursor),
             "c_buffered": buffered, "c_now": now},
        )  # fmt: skip

    def _missed_summary(
        self, tx: Tx, sched: Schedule, after: dt.datetime, until: dt.datetime, now: dt.datetime
    ) -> None:
        """One event for missed ticks too many to record one by one."""
        self._event(
            tx,
            sched,
            EventType.SCHEDULE_TICK_MISSED,
            until,
            f"ticks after {after.isoformat()} up to {until.isoformat()} were missed "
            "(too many to record one by one)",
            {"from": after.isoformat(), "to": until.isoformat(), "summary": True},
        )

    # -- one tick ---------------------------------------------------------------------

    def _fire(
        self,
        tx: Tx,
        sched: Schedule,
        tick: dt.datetime,
        kind: str,
        overlap: Overlap,
        buffered: int,
        result: TurnResult,
    ) -> int:
        """Fire, skip or buffer ``tick`` by ``overlap``; returns 1 if buffered."""
        conn, now = tx.conn, tx.now
        # ``allow`` with nothing buffered fires whatever is active: no need to look
        needs_look = overlap != Overlap.ALLOW or buffered > 0
        active = self._active_runs(conn, sched.id) if needs_look else []
        decision = decide_overlap(overlap, len(active), buffered)
        if decision.action == "skip":
            why = f"overlap policy {overlap.value!r}: a run of the schedule is active"
            if self._claim(conn, sched.id, tick, TickState.SKIPPED, why, kind, now):
                result.skipped += 1
                self._event(tx, sched, EventType.SCHEDULE_TICK_SKIPPED, tick, why)
            return 0
        if decision.action == "buffer":
            why = f"overlap policy {overlap.value!r}: waits for the active run"
            if self._claim(conn, sched.id, tick, TickState.BUFFERED, why, kind, now):
                result.buffered += 1
                return 1
            return 0
        if not self._claim(conn, sched.id, tick, TickState.FIRED, None, kind, now):
            return 0  # another scheduler (or an earlier turn) decided it
        if decision.cancel:
            for run_id in active:
                with contextlib.suppress(Conflict):  # it ended meanwhile
                    self.runs.request_cancel(
                        tx, run_id, f"cancelled by a newer tick of schedule {sched.name!r}"
                    )
        self._start(tx, sched, tick, kind, result)
        return 0

    def _start(
        self, tx: Tx, sched: Schedule, tick: dt.datetime, kind: str, result: TurnResult
    ) -> str | None:
        """Create the run of a claimed tick (in ``tx``); a tick that cannot
        start (pipeline gone, parameters no longer valid) is marked failed."""
        spec = sched.spec
        try:
            key = (sched.namespace, spec.pipeline)
            pv = self._versions.get(key)
            if pv is None:  # one read per pipeline and transaction
                pv = self._versions[key] = latest(tx.conn, sched.namespace, spec.pipeline)
            params = validate_params(pv.spec, spec.params)
        except (FerrymanError, ParamsInvalid) as exc:
            why = f"no run started: {exc}"
            self._set_tick(tx.conn, sched.id, tick, TickState.FAILED, why, None)
            self._event(tx, sched, EventType.SCHEDULE_TICK_FAILED, tick, why)
            result.failed += 1
            return None
        stamp = tick.isoformat()
        record = create_run(
            tx,
            RunRequest(
                pv,
                params,
                origin=Origin(kind=kind, schedule=sched.name, tick=stamp),
                labels={**spec.labels, LABEL_SCHEDULE: sched.name, LABEL_TICK: stamp},
            ),
        )
        run_id = str(record["id"])
        self._set_tick(tx.conn, sched.id, tick, TickState.FIRED, None, run_id)
        result.fired += 1
        result.run_ids.append(run_id)
        return run_id

    def _start_buffered(self, tx: Tx, sched: Schedule, result: TurnResult) -> int:
        """Start the oldest buffered tick once no run of the schedule is
        active; returns how many ticks are still buffered."""
        if sched.buffered <= 0 or self._active_runs(tx.conn, sched.id):
            return sched.buffered
        tick = tx.conn.execute(
            sa.select(schedule_ticks.c.fire_time)
            .where(
                schedule_ticks.c.schedule_id == sched.id,
                schedule_ticks.c.state == TickState.BUFFERED.value,
            )
            .order_by(schedule_ticks.c.fire_time)
            .limit(1)
        ).scalar()
        left = sched.buffered - 1
        if tick is not None:
            self._start(tx, sched, tick, "schedule", result)
        else:
            left = 0
        tx.conn.execute(
            sa.update(schedules).where(schedules.c.id == sched.id).values(buffered=left)
        )
        return left

    # -- by hand -------------------------------------------------------------------------

    def run_now(self, namespace: str, name: str, now: dt.datetime | None = None) -> str:
        """One run of the schedule now (same parameters), whatever its overlap
        policy and pause; its tick is ``now`` (kind ``manual``)."""
        now = now or utcnow()
        with self.store.write() as conn:
            row = _lock_by_name(conn, namespace, name)
            sched = from_row(row)
            tx = self.runs.tx(conn)
            self._versions = {}
            result = TurnResult()
            if not self._claim(conn, sched.id, now, TickState.FIRED, None, "manual", now):
                raise Conflict(f"schedule {name!r} already has a tick at {now.isoformat()}")
            run_id = self._start(tx, sched, now, "manual", result)
            tx.flush()
        self.store.wake_local()
        if run_id is None:
            raise InvalidInput(f"schedule {name!r}: the run could not start (see its ticks)")
        return run_id

    def backfill(
        self,
        namespace: str,
        name: str,
        start: dt.datetime,
        end: dt.datetime,
        *,
        overlap: Overlap = Overlap.ALLOW,
        limit: int = 1000,
        now: dt.datetime | None = None,
    ) -> TurnResult:
        """Fire the schedule's ticks in ``(start, end]`` that were never
        decided (a tick already claimed, fired or missed, is left alone), with
        ``overlap`` as the overlap policy. At most ``limit`` ticks."""
        now = now or utcnow()
        if end <= start:
            raise InvalidInput("backfill: --to must be after --from")
        if end > now:
            raise InvalidInput("backfill: --to must not be in the future")
        result = TurnResult()
        with self.store.write() as conn:
            sched = from_row(_lock_by_name(conn, namespace, name))
            ticks, more = ticks_between(sched.spec, start, end, limit=limit)
            if more:
                raise InvalidInput(
                    f"backfill: more than {limit} ticks between {start.isoformat()} and "
                    f"{end.isoformat()}; ask for a shorter range"
                )
            tx = self.runs.tx(conn)
            self._versions = {}
            buffered = sched.buffered
            for tick in ticks:
                buffered += self._fire(tx, sched, tick, "backfill", overlap, buffered, result)
            conn.execute(
                sa.update(schedules).where(schedules.c.id == sched.id).values(buffered=buffered)
            )
            tx.flush()
        self.store.wake_local()
        return result

    # -- helpers -----------------------------------------------------------------------------

    def _claim(
        self,
        conn: Connection,
        schedule_id: str,
        tick: dt.datetime,
        state: TickState,
        reason: str | None,
        kind: str,
        now: dt.datetime,
    ) -> bool:
        """Insert the tick's row; whether this transaction got it."""
        stmt = _claim_stmt(conn.dialect.name)
        row = conn.execute(
            stmt,
            {
                "schedule_id": schedule_id,
                "fire_time": tick,
                "state": state.value,
                "reason": reason,
                "kind": kind,
                "created_at": now,
                "run_id": None,
            },
        ).first()
        return row is not None

    @staticmethod
    def _set_tick(
        conn: Connection,
        schedule_id: str,
        tick: dt.datetime,
        state: TickState,
        reason: str | None,
        run_id: str | None,
    ) -> None:
        conn.execute(
            _SET_TICK,
            {"t_sid": schedule_id, "t_time": tick, "t_state": state.value, "t_reason": reason,
             "t_run": run_id},
        )  # fmt: skip

    @staticmethod
    def _active_runs(conn: Connection, schedule_id: str) -> list[str]:
        """Runs of the schedule still queued or running (among its newest
        fired ticks: under every overlap policy but ``allow`` at most one is
        active at a time, so an old active run cannot hide further back)."""
        return [r.id for r in conn.execute(_ACTIVE_RUNS, {"a_sid": schedule_id})]

    @staticmethod
    def _event(
        tx: Tx,
        sched: Schedule,
        etype: EventType,
        tick: dt.datetime,
        message: str,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """A schedule's event (no run: ``run_id`` is the schedule's id)."""
        tx.record_event(
            {
                "id": new_id(),
                "type": etype.value,
                "time": tx.now,
                "namespace": sched.namespace,
                "pipeline": sched.spec.pipeline,
                "pipeline_version": "",
                "run_id": sched.id,
                "node": None,
                "attempt": None,
                "message": message,
                "labels": {**sched.spec.labels, LABEL_SCHEDULE: sched.name},
                "data": {
                    "schedule": sched.name,
                    "schedule_id": sched.id,
                    "tick": tick.isoformat(),
                    **(extra or {}),
                },
            }
        )


def _lock(conn: Connection, schedule_id: str, *, skip_locked: bool) -> Any:
    q = sa.select(schedules).where(schedules.c.id == schedule_id)
    if conn.dialect.name == "postgresql":
        q = q.with_for_update(skip_locked=skip_locked)
    return conn.execute(q).first()


def _lock_by_name(conn: Connection, namespace: str, name: str) -> Any:
    sid = get(conn, namespace, name).id
    row = _lock(conn, sid, skip_locked=False)
    if row is None:
        raise InvalidInput(f"schedule {name!r} was deleted meanwhile")
    return row

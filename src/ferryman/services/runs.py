"""Runs: the single gate for every state transition, and the use cases built on it.

Every move of a run or node goes through ``Tx.move_nodes`` / ``Tx.move_run``: a
guarded ``UPDATE ... WHERE state IN (<legal sources>)``. Zero rows updated
means a lost race or an illegal move; nothing else changes then. The event of
each move is inserted in the same transaction (``Tx.flush``), and so is the
bookkeeping that ends a run when its last node reaches a terminal state.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from ferryman.domain.events import NODE_EVENT, RUN_EVENT
from ferryman.domain.spec import PipelineSpec
from ferryman.domain.states import NODE_TERMINAL, NodeState, RunState, node_sources, run_sources
from ferryman.errors import Conflict, NotFound
from ferryman.services import triggers
from ferryman.services.pipelines import PipelineVersion, spec_of_version
from ferryman.services.queries import RUN_FIELDS, run_dict
from ferryman.services.subscriptions import enqueue_deliveries
from ferryman.store.engine import CALLBACK_CHANNEL, DELIVERY_CHANNEL, WAKE_CHANNEL, Store
from ferryman.store.prepared import Prepared
from ferryman.store.tables import callbacks, events, new_id, nodes, runs, utcnow

log = logging.getLogger(__name__)

_CHUNK = 2000  # bound on IN (...) list sizes
RUN_EVENT_STATE = {RUN_EVENT[s].value: s.value for s in RUN_EVENT}


@dataclass(frozen=True)
class Sel:
    """A named node selector: its clause is built once (with bind parameters)
    and the compiled statement is cached under ``key``."""

    key: str
    build: Callable[[], sa.ColumnElement[bool]]
    params: dict[str, Any]
    expanding: bool = False  # has IN-list parameters (cannot be a Prepared statement)


_STMTS: dict[tuple[Any, ...], Any] = {}
_DECREMENT = Prepared(
    sa.update(nodes)
    .where(nodes.c.run_id == sa.bindparam("s_run"), nodes.c.name == sa.bindparam("s_name"))
    .values(waiting_on=nodes.c.waiting_on - 1)
)
_COUNT_OFF = Prepared(
    sa.update(runs)
    .where(runs.c.id == sa.bindparam("r_id"))
    .values(nodes_remaining=runs.c.nodes_remaining - sa.bindparam("n"))
    .returning(
        runs.c.nodes_remaining,
        runs.c.failed_node,
        runs.c.cancel_requested,
        runs.c.cancel_reason,
        runs.c.error,
    ),
    returns=("nodes_remaining", "failed_node", "cancel_requested", "cancel_reason", "error"),
)
_INSERT_EVENTS = Prepared(
    sa.insert(events).values(
        {c.name: sa.bindparam(c.name, type_=c.type) for c in events.c if c.name != "seq"}
    )
)
_RET = (nodes.c.id, nodes.c.run_id, nodes.c.name, nodes.c.attempt)
_RET_NAMES = ("id", "run_id", "name", "attempt")


def _node_update(
    to: NodeState,
    where: sa.ColumnElement[bool] | None,
    by_ids: int,
    vals: dict[str, Any],
    sqlv: dict[str, Any],
) -> Any:
    # The legal sources are constant per target: inline them in the SQL.
    sources = sorted(s.value for s in node_sources(to))
    stmt = sa.update(nodes).where(
        sa.text("nodes.state IN (" + ", ".join(f"'{s}'" for s in sources) + ")")
    )
    if by_ids == 1:
        stmt = stmt.where(nodes.c.id == sa.bindparam("id1"))
    elif by_ids > 1:
        stmt = stmt.where(nodes.c.id.in_(sa.bindparam("ids", expanding=True)))
    if where is not None:
        stmt = stmt.where(where)
    setv: dict[str, Any] = {"state": to.value}
    setv.update({k: sa.bindparam(f"v_{k}", type_=nodes.c[k].type) for k in vals})
    setv.update(sqlv)
    return stmt.values(**setv).returning(*_RET)


def sel_attempt(attempt: int, worker: str | None = None) -> Sel:
    """The node's current attempt is ``attempt`` (and it is leased by ``worker``)."""
    if worker is None:
        return Sel(
            "attempt", lambda: nodes.c.attempt == sa.bindparam("s_attempt"), {"s_attempt": attempt}
        )
    return Sel(
        "attempt_worker",
        lambda: sa.and_(
            nodes.c.attempt == sa.bindparam("s_attempt"),
            nodes.c.worker_id == sa.bindparam("s_worker"),
        ),
        {"s_attempt": attempt, "s_worker": worker},
    )


def sel_expired(attempt: int, worker: str, now: dt.datetime) -> Sel:
    """The node is still on ``attempt``, leased by ``worker``, and the lease expired."""
    return Sel(
        "expired",
        lambda: sa.and_(
            nodes.c.attempt == sa.bindparam("s_attempt"),
            nodes.c.worker_id == sa.bindparam("s_worker"),
            nodes.c.lease_expires_at < sa.bindparam("s_now", type_=nodes.c.lease_expires_at.type),
        ),
        {"s_attempt": attempt, "s_worker": worker, "s_now": now},
    )


def sel_ready(run_id: str) -> Sel:
    """Pending nodes of ``run_id`` no longer waiting on any upstream."""
    return Sel(
        "ready",
        lambda: sa.and_(nodes.c.run_id == sa.bindparam("s_run"), nodes.c.waiting_on <= 0),
        {"s_run": run_id},
    )


def sel_names(run_id: str, names: Sequence[str], *, last_wait: bool = False) -> Sel:
    """Nodes of ``run_id`` called ``names`` (with ``last_wait``: only those
    waiting on one more upstream)."""

    one = len(names) == 1

    def build() -> sa.ColumnElement[bool]:
        c = sa.and_(
            nodes.c.run_id == sa.bindparam("s_run"),
            nodes.c.name == sa.bindparam("s_name")
            if one
            else nodes.c.name.in_(sa.bindparam("s_names", expanding=True)),
        )
        return sa.and_(c, nodes.c.waiting_on <= 1) if last_wait else c

    params: dict[str, Any] = {"s_run": run_id}
    if one:
        params["s_name"] = names[0]
    else:
        params["s_names"] = list(names)
    key = ("names_last" if last_wait else "names") + ("1" if one else "")
    return Sel(key, build, params, expanding=not one)


@dataclass
class RunInfo:
    """What the engine needs to know about a run, cached per process."""

    id: str
    namespace: str
    pipeline: str
    version: str
    version_id: int
    labels: dict[str, str]
    params: dict[str, Any]
    options: dict[str, Any]
    spec: PipelineSpec
    downstream: dict[str, list[str]]
    started: bool = False  # known to be past `queued` (saves a no-op UPDATE per claim)
    deadline: dt.datetime | None = None  # the run's timeout, as a wall-clock time

    def descendants(self, name: str) -> list[str]:
        seen: set[str] = set()
        queue = deque(self.downstream.get(name, ()))
        while queue:
            n = queue.popleft()
            if n not in seen:
                seen.add(n)
                queue.extend(self.downstream.get(n, ()))
        return list(seen)


class RunCache:
    """Run metadata by id (immutable after creation, so caching is safe)."""

    def __init__(self, max_size: int = 4096) -> None:
        self._runs: dict[str, RunInfo] = {}
        self._max = max_size

    def get(self, conn: Connection, run_id: str) -> RunInfo:
        info = self._runs.get(run_id)
        if info is None:
            row = conn.execute(sa.select(runs).where(runs.c.id == run_id)).first()
            if row is None:
                raise NotFound(f"no run {run_id!r}")
            spec = spec_of_version(conn, row.pipeline_version_id)
            info = RunInfo(
                id=row.id,
                namespace=row.namespace,
                pipeline=row.pipeline,
                version=row.version,
                version_id=row.pipeline_version_id,
                labels=row.labels or {},
                params=row.params or {},
                options=row.options or {},
                spec=spec,
                downstream=spec.downstream(),
                deadline=row.deadline,
            )
            if len(self._runs) >= self._max:
                self._runs.pop(next(iter(self._runs)))
            self._runs[run_id] = info
        return info

    def put(self, info: RunInfo) -> None:
        self._runs[info.id] = info


@dataclass
class Tx:
    """One write transaction: the transition gate plus its pending events."""

    conn: Connection
    cache: RunCache
    store: Store | None = None
    now: dt.datetime = field(default_factory=utcnow)
    _events: list[dict[str, Any]] = field(default_factory=list)
    _terminal: dict[str, int] = field(default_factory=dict)
    _released: list[dict[str, Any]] = field(default_factory=list)
    woke: bool = False
    _woken: set[str] = field(default_factory=set)
    #: runs inserted in this transaction, as ``queries.run_dict`` shows them
    created_runs: dict[str, dict[str, Any]] = field(default_factory=dict)

    # -- the gate -------------------------------------------------------------

    def move_nodes(
        self,
        to: NodeState,
        *,
        ids: Sequence[int] | None = None,
        where: sa.ColumnElement[bool] | Sel | None = None,
        values: dict[str, Any] | None = None,
        sql_values: dict[str, Any] | None = None,
        message: str = "",
        data: dict[str, Any] | None = None,
    ) -> list[Row[Any]]:
        """Move the selected nodes to ``to`` if (and only if) that move is legal.

        Nodes are selected by ``ids`` and/or ``where`` (a clause, or a ``Sel``
        whose statement is built once and cached: this is the hot path).
        ``sql_values`` are SQL expressions (constant per call site). Returns
        the rows moved (id, run_id, name, attempt); illegal or raced rows are
        left untouched and simply not returned.
        """
        if ids is not None and not ids:
            return []
        vals: dict[str, Any] = {**(values or {})}
        if to in NODE_TERMINAL:
            vals.setdefault("ended_at", self.now)
            vals["lease_expires_at"] = None
        sqlv = sql_values or {}
        moved: list[Row[Any]] = []
        batches: list[Sequence[int] | None] = (
            [ids[i : i + _CHUNK] for i in range(0, len(ids), _CHUNK)] if ids is not None else [None]
        )
        for batch in batches:
            params = {f"v_{k}": v for k, v in vals.items()}
            by_ids = 0 if batch is None else (1 if len(batch) == 1 else 2)
            if by_ids == 1:
                assert batch is not None
                params["id1"] = batch[0]
            elif by_ids == 2:
                assert batch is not None
                params["ids"] = list(batch)
            if isinstance(where, Sel):
                params.update(where.params)
                key = (to, where.key, by_ids, tuple(sorted(vals)), tuple(sorted(sqlv)))
                stmt = _STMTS.get(key)
                if stmt is None:
                    stmt = _node_update(to, where.build(), by_ids, vals, sqlv)
                    if by_ids < 2 and not where.expanding:
                        stmt = Prepared(stmt, returns=_RET_NAMES)
                    _STMTS[key] = stmt
            else:
                stmt = _node_update(to, where, by_ids, vals, sqlv)
            if isinstance(stmt, Prepared):
                moved.extend(stmt.rows(self.conn, params))
            else:
                moved.extend(self.conn.execute(stmt, params).all())
        etype = NODE_EVENT.get(to)
        for r in moved:
            if etype is not None:
                self._event(r.run_id, etype.value, r.name, r.attempt, message, data)
            if to in NODE_TERMINAL:
                self._terminal[r.run_id] = self._terminal.get(r.run_id, 0) + 1
        if to == NodeState.QUEUED and moved:
            self.wake()
        return moved

    def move_run(
        self,
        run_id: str,
        to: RunState,
        *,
        values: dict[str, Any] | None = None,
        message: str = "",
        data: dict[str, Any] | None = None,
    ) -> bool:
        """Move a run to ``to`` if legal; False on a lost race or illegal move."""
        vals: dict[str, Any] = {"state": to.value, "updated_at": self.now, **(values or {})}
        if to.terminal:
            vals.setdefault("ended_at", self.now)
        if to == RunState.RUNNING:
            vals.setdefault("started_at", self.now)
        key = ("run", to, tuple(sorted(vals)))
        stmt = _STMTS.get(key)
        if stmt is None:
            sources = ", ".join(f"'{s.value}'" for s in sorted(run_sources(to)))
            stmt = _STMTS[key] = Prepared(
                sa.update(runs)
                .where(runs.c.id == sa.bindparam("r_id"), sa.text(f"runs.state IN ({sources})"))
                .values(**{k: sa.bindparam(f"v_{k}", type_=runs.c[k].type) for k in vals})
                .returning(runs.c.id),
                returns=("id",),
            )
        params = {f"v_{k}": v for k, v in vals.items()}
        params["r_id"] = run_id
        res = stmt.rows(self.conn, params)
        if not res:
            return False
        self._event(run_id, RUN_EVENT[to].value, None, None, message, data)
        return True

    def _event(
        self,
        run_id: str,
        etype: str,
        node: str | None,
        attempt: int | None,
        message: str,
        data: dict[str, Any] | None,
    ) -> None:
        info = self.cache.get(self.conn, run_id)
        self._events.append(
            {
                "id": new_id(),
                "type": etype,
                "time": self.now,
                "namespace": info.namespace,
                "pipeline": info.pipeline,
                "pipeline_version": info.version,
                "run_id": run_id,
                "node": node,
                "attempt": attempt,
                "message": message,
                "labels": info.labels,
                "data": data or {},
            }
        )

    def wake(self, channel: str = WAKE_CHANNEL) -> None:
        """Wake the loops of ``channel`` once this transaction commits."""
        if self.store is None:
            return
        if channel == WAKE_CHANNEL:
            if not self.woke:
                self.store.notify(self.conn)
                self.woke = True
        elif channel not in self._woken:
            self.store.notify(self.conn, channel)
            self._woken.add(channel)

    # -- end of transaction ---------------------------------------------------

    def flush(self) -> None:
        """Settle run bookkeeping and write the pending events (same transaction)."""
        self.settle_releases()
        while self._terminal:
            pending, self._terminal = self._terminal, {}
            for run_id, n in pending.items():
                (row,) = _COUNT_OFF.rows(self.conn, {"r_id": run_id, "n": n})
                if row.nodes_remaining <= 0:
                    self._finish_run(run_id, row)
        if self._events:
            _INSERT_EVENTS.run_many(self.conn, self._events)
            # Subscribers' deliveries: queued with their events (outbox, SPEC §4).
            if enqueue_deliveries(self.conn, self._events, self.now):
                self.wake(DELIVERY_CHANNEL)
            self._events = []

    def _finish_run(self, run_id: str, row: Row[Any]) -> None:
        if row.cancel_requested and row.cancel_reason == "timeout":
            moved = self.move_run(run_id, RunState.FAILED, message=row.error or "run timed out")
        elif row.cancel_requested:
            moved = self.move_run(
                run_id, RunState.CANCELLED, message=row.cancel_reason or "cancelled"
            )
        elif row.failed_node:
            msg = f"step {row.failed_node!r} failed: {row.error or ''}".strip()
            moved = self.move_run(run_id, RunState.FAILED, message=msg)
        else:
            moved = self.move_run(run_id, RunState.SUCCEEDED)
        if moved:
            self._enqueue_callbacks(run_id)
            self._fire_triggers(run_id)

    def _fire_triggers(self, run_id: str) -> None:
        """Start the runs other pipelines declared on this one's final state, in
        this transaction: the guarded move above succeeds once per run, so each
        trigger fires exactly once (see services/triggers.py)."""
        event = self._events[-1]  # the run's final-state event, just queued by move_run
        state = RUN_EVENT_STATE[event["type"]]
        info = self.cache.get(self.conn, run_id)
        if triggers.has_triggers(self.conn, info.namespace, info.pipeline, state):
            limit = self.store.trigger_max_depth if self.store else triggers.DEFAULT_MAX_DEPTH
            triggers.fire(self, run_id, state, event["id"], limit)

    def _enqueue_callbacks(self, run_id: str) -> None:
        """Completion callbacks are recorded with the run's final state (outbox),
        so a restart can never lose one; the dispatcher delivers them."""
        opts = self.cache.get(self.conn, run_id).options
        rows = []
        if opts.get("webhook_url"):
            rows.append(("webhook", {"url": opts["webhook_url"]}))
        if opts.get("slack_channel"):
            rows.append(
                ("slack", {"channel": opts["slack_channel"], "thread": opts.get("slack_thread")})
            )
        for kind, target in rows:
            self.conn.execute(
                sa.insert(callbacks).values(
                    id=new_id(), run_id=run_id, kind=kind, target=target, state="pending",
                    attempts=0, next_attempt_at=self.now, created_at=self.now,
                )
            )  # fmt: skip
        if rows:
            self.wake(CALLBACK_CHANNEL)

    # -- node outcomes --------------------------------------------------------

    def node_succeeded(
        self,
        node_id: int,
        run_id: str,
        name: str,
        attempt: int,
        output: Any,
        has_output: bool,
        worker: str | None = None,
        exit_code: int | None = 0,
    ) -> bool:
        moved = self.move_nodes(
            NodeState.SUCCEEDED,
            ids=[node_id],
            where=sel_attempt(attempt, worker),
            values={
                "output": output,
                "has_output": has_output,
                "error": None,
                "exit_code": exit_code,
            },
        )
        if not moved:
            return False
        self.release_downstream(run_id, name)
        return True

    def release_downstream(self, run_id: str, name: str) -> None:
        """An upstream finished well: count it off its children. The children
        that are then ready are queued by ``settle_releases`` (batched)."""
        children = self.cache.get(self.conn, run_id).downstream.get(name, ())
        if children:
            self._released.extend({"s_run": run_id, "s_name": c} for c in children)

    def settle_releases(self) -> None:
        """Apply the pending count-offs and queue every node that is now ready."""
        if not self._released:
            return
        released, self._released = self._released, []
        _DECREMENT.run_many(self.conn, released)
        for run_id in dict.fromkeys(r["s_run"] for r in released):
            self.move_nodes(
                NodeState.QUEUED, where=sel_ready(run_id), values={"ready_at": self.now}
            )

    def node_failed(
        self,
        node_id: int,
        run_id: str,
        name: str,
        attempt: int,
        error: str,
        *,
        retry_policy_delay: float | None,
        worker: str | None = None,
        where: Sel | None = None,
        exit_code: int | None = None,
        cancelled: bool = False,
    ) -> NodeState | None:
        """An attempt ended badly: retry (if ``retry_policy_delay`` is given),
        cancel, or fail the node and skip everything downstream of it."""
        where = where or sel_attempt(attempt, worker)
        common = {"error": error, "exit_code": exit_code}
        if cancelled:
            moved = self.move_nodes(
                NodeState.CANCELLED, ids=[node_id], where=where, values=common, message=error
            )
            return NodeState.CANCELLED if moved else None
        if retry_policy_delay is not None:
            ready = self.now + dt.timedelta(seconds=retry_policy_delay)
            moved = self.move_nodes(
                NodeState.RETRYING,
                ids=[node_id],
                where=where,
                values={**common, "ready_at": ready, "worker_id": None, "lease_expires_at": None},
                message=error,
                data={"retry_at": ready.isoformat(), "delay": round(retry_policy_delay, 3)},
            )
            if moved:
                self.wake()
                return NodeState.RETRYING
            return None
        moved = self.move_nodes(
            NodeState.FAILED, ids=[node_id], where=where, values=common, message=error
        )
        if not moved:
            return None
        self.conn.execute(
            sa.update(runs)
            .where(runs.c.id == run_id, runs.c.failed_node.is_(None))
            .values(failed_node=name, error=error[:4000])
        )
        info = self.cache.get(self.conn, run_id)
        desc = info.descendants(name)
        for i in range(0, len(desc), _CHUNK):
            self.move_nodes(
                NodeState.SKIPPED,
                where=sel_names(run_id, desc[i : i + _CHUNK]),
                message=f"upstream step {name!r} failed",
            )
        return NodeState.FAILED


class RunService:
    """Use cases on runs. Every write goes through a ``Tx``."""

    def __init__(self, store: Store, cache: RunCache | None = None) -> None:
        self.store = store
        self.cache = cache or RunCache()

    def tx(self, conn: Connection) -> Tx:
        return Tx(conn, self.cache, self.store)

    # -- create -----------------------------------------------------------------

    def create_run(
        self,
        pv: PipelineVersion,
        params: dict[str, Any],
        *,
        labels: dict[str, str] | None = None,
        idempotency_key: str | None = None,
        options: dict[str, Any] | None = None,
        rerun_of: str | None = None,
        reuse: dict[str, Any] | None = None,
        trigger: dict[str, Any] | None = None,
    ) -> tuple[str, bool]:
        """Create a queued run of ``pv``; returns ``(run_id, created)``.

        With an ``idempotency_key`` already used in the namespace, the existing
        run is returned with ``created=False``. ``reuse`` maps step names to the
        outputs of a previous run (re-run from failed steps).
        """
        record, created = self.create_run_record(
            pv,
            params,
            labels=labels,
            idempotency_key=idempotency_key,
            options=options,
            rerun_of=rerun_of,
            reuse=reuse,
            trigger=trigger,
        )
        return str(record["id"]), created

    def create_run_record(
        self,
        pv: PipelineVersion,
        params: dict[str, Any],
        *,
        labels: dict[str, str] | None = None,
        idempotency_key: str | None = None,
        options: dict[str, Any] | None = None,
        rerun_of: str | None = None,
        reuse: dict[str, Any] | None = None,
        trigger: dict[str, Any] | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Like ``create_run``, but returns the run as ``queries.run_dict`` shows
        it, without reading it back (one transaction in all)."""
        for attempt in range(3):
            try:
                with self.store.write() as conn:
                    if idempotency_key:
                        existing = self._by_key(conn, pv, idempotency_key, params)
                        if existing:
                            return existing, False
                    tx = self.tx(conn)
                    run_id = self._insert_run(
                        tx,
                        pv,
                        params,
                        labels or {},
                        idempotency_key,
                        options or {},
                        rerun_of,
                        reuse or {},
                        trigger,
                    )
                    tx.flush()
                self.store.wake_local()
                return tx.created_runs[run_id], True
            except sa.exc.IntegrityError:
                if not idempotency_key or attempt == 2:
                    raise
                with self.store.read() as conn:
                    existing = self._by_key(conn, pv, idempotency_key, params)
                if existing:
                    return existing, False
        raise RuntimeError("unreachable")

    @staticmethod
    def _by_key(
        conn: Connection, pv: PipelineVersion, key: str, params: dict[str, Any]
    ) -> dict[str, Any] | None:
        """The run already created with ``key``; a Conflict if it was for other input."""
        row = conn.execute(
            sa.select(runs).where(runs.c.namespace == pv.namespace, runs.c.idempotency_key == key)
        ).first()
        if row is None:
            return None
        if row.pipeline != pv.name or row.params != params:
            raise Conflict(
                f"idempotency key {key!r} was already used for run {row.id} with a different "
                "pipeline or different parameters",
                {"run_id": row.id},
            )
        return run_dict(row)

    def _insert_run(
        self,
        tx: Tx,
        pv: PipelineVersion,
        params: dict[str, Any],
        labels: dict[str, str],
        key: str | None,
        options: dict[str, Any],
        rerun_of: str | None,
        reuse: dict[str, Any],
        trigger: dict[str, Any] | None,
    ) -> str:
        spec = pv.spec
        now = tx.now
        run_id = new_id()
        all_labels = {**spec.labels, **labels}
        timeout = options.get("timeout", spec.timeout)
        todo = [s for s in spec.steps if s.name not in reuse]
        values: dict[str, Any] = dict(
            id=run_id,
            namespace=pv.namespace,
            pipeline=spec.name,
            pipeline_version_id=pv.id,
            version=pv.version,
            state=RunState.QUEUED.value,
            params=params,
            labels=all_labels,
            idempotency_key=key,
            nodes_total=len(spec.steps),
            nodes_remaining=len(todo),
            cancel_requested=False,
            deadline=(now + dt.timedelta(seconds=timeout)) if timeout else None,
            rerun_of=rerun_of,
            trigger=trigger,
            options=options,
            created_at=now,
            updated_at=now,
        )
        tx.conn.execute(sa.insert(runs).values(**values))
        record = {k: values.get(k) for k in RUN_FIELDS}
        record["duration"] = 0.0
        tx.created_runs[run_id] = record
        self.cache.put(
            RunInfo(
                run_id,
                pv.namespace,
                spec.name,
                pv.version,
                pv.id,
                all_labels,
                params,
                options,
                spec,
                spec.downstream(),
                deadline=(now + dt.timedelta(seconds=timeout)) if timeout else None,
            )
        )
        rows = []
        for s in spec.steps:
            reused = s.name in reuse
            waiting = sum(1 for d in set(s.depends_on) if d not in reuse)
            rows.append(
                {
                    "run_id": run_id,
                    "name": s.name,
                    "state": NodeState.SUCCEEDED.value if reused else NodeState.PENDING.value,
                    "attempt": 0,
                    "max_attempts": s.retries + 1,
                    "waiting_on": waiting,
                    "ready_at": None,
                    "cancel_requested": False,
                    "has_output": reused,
                    "output": reuse.get(s.name),
                    "reused": reused,
                    "ended_at": now if reused else None,
                }
            )
        for i in range(0, len(rows), _CHUNK):
            tx.conn.execute(sa.insert(nodes), rows[i : i + _CHUNK])
        msg = f"re-run of {rerun_of}" if rerun_of else ""
        tx._event(
            run_id,
            RUN_EVENT[RunState.QUEUED].value,
            None,
            None,
            msg,
            {"trigger": trigger} if trigger else None,
        )
        tx.move_nodes(
            NodeState.QUEUED,
            where=sa.and_(nodes.c.run_id == run_id, nodes.c.waiting_on == 0),
            values={"ready_at": now},
        )
        return run_id

    # -- cancel -----------------------------------------------------------------

    def cancel(self, run_id: str, reason: str = "cancelled by user") -> None:
        """Cancel a run: nodes not started are cancelled at once, running ones
        are stopped by their worker (graceful, then forced); the run becomes
        ``cancelled`` when the last of them has ended."""
        with self.store.write() as conn:
            tx = self.tx(conn)
            self.request_cancel(tx, run_id, reason)
            tx.flush()

    def request_cancel(self, tx: Tx, run_id: str, reason: str, *, kind: str = "user") -> None:
        row = tx.conn.execute(
            sa.select(runs.c.state, runs.c.cancel_requested).where(runs.c.id == run_id)
        ).first()
        if row is None:
            raise NotFound(f"no run {run_id!r}")
        if RunState(row.state).terminal:
            raise Conflict(f"run {run_id} is already {row.state}; it cannot be cancelled")
        if row.cancel_requested:
            return
        tx.conn.execute(
            sa.update(runs)
            .where(runs.c.id == run_id)
            .values(
                cancel_requested=True,
                cancel_reason="timeout" if kind == "timeout" else reason,
                error=reason if kind == "timeout" else None,
                updated_at=tx.now,
            )
        )
        tx.move_nodes(
            NodeState.CANCELLED,
            where=sa.and_(
                nodes.c.run_id == run_id,
                nodes.c.state.in_(
                    [NodeState.PENDING.value, NodeState.QUEUED.value, NodeState.RETRYING.value]
                ),
            ),
            message=reason,
        )
        hit = tx.conn.execute(
            sa.update(nodes)
            .where(nodes.c.run_id == run_id, nodes.c.state == NodeState.RUNNING.value)
            .values(cancel_requested=True)
            .returning(nodes.c.id)
        ).first()
        if hit is not None and tx.store is not None:
            tx.store.notify_cancel(tx.conn)

    # -- re-run -----------------------------------------------------------------

    def rerun(self, run_id: str) -> str:
        """A new run of the same version and params that re-uses the outputs of
        the steps that succeeded and runs the others again."""
        with self.store.read() as conn:
            row = conn.execute(sa.select(runs).where(runs.c.id == run_id)).first()
            if row is None:
                raise NotFound(f"no run {run_id!r}")
            if row.state not in (RunState.FAILED.value, RunState.CANCELLED.value):
                raise Conflict(f"run {run_id} is {row.state}: only failed or cancelled runs re-run")
            done = conn.execute(
                sa.select(nodes.c.name, nodes.c.output).where(
                    nodes.c.run_id == run_id, nodes.c.state == NodeState.SUCCEEDED.value
                )
            ).all()
            spec = spec_of_version(conn, row.pipeline_version_id)
        pv = PipelineVersion(
            row.pipeline_version_id, row.namespace, row.pipeline, row.version, spec
        )
        new, _ = self.create_run(
            pv,
            row.params,
            labels=row.labels,
            options=row.options,
            rerun_of=run_id,
            reuse={r.name: r.output for r in done},
        )
        return new

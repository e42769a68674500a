"""The transition gate: the one way a run or node changes state.

Every move goes through ``Tx.move_nodes`` / ``Tx.move_run``: a guarded
``UPDATE ... WHERE state IN (<legal sources>)``. Zero rows updated means a lost
race or an illegal move; nothing else changes then. The event of each move is
inserted in the same transaction (``Tx.flush``), and so is the bookkeeping
that ends a run when its last node reaches a final state.

What must happen *in the transaction that ends a run* or *with the events it
writes* (completion callbacks, subscription deliveries, event triggers) is
not imported here: it is registered as ``GateHooks`` by whoever builds the
``Tx`` (``services/runs.py``). The gate imports none of its consumers.
See docs/decisions/0007-gate-hooks.md.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from ferryman.domain.events import NODE_EVENT, RUN_EVENT
from ferryman.domain.states import NODE_TERMINAL, NodeState, RunState, node_sources, run_sources
from ferryman.services.cache import RunCache
from ferryman.services.selectors import Sel, sel_attempt, sel_names, sel_ready
from ferryman.store.engine import WAKE_CHANNEL, Store
from ferryman.store.prepared import Prepared
from ferryman.store.tables import events, new_id, nodes, runs, utcnow

CHUNK = 2000  # bound on IN (...) list sizes

#: ``hook(tx, run_id, state, event)``: ``run_id`` has just moved to the final
#: ``state``; ``event`` is its final-state event (not written yet).
RunEndedHook = Callable[["Tx", str, RunState, Mapping[str, Any]], None]
#: ``hook(tx, events)``: ``events`` were just inserted, in this order.
EventsHook = Callable[["Tx", Sequence[Mapping[str, Any]]], None]


@dataclass(frozen=True)
class GateHooks:
    """What reacts inside the gate's transaction, in registration order.

    ``on_run_ended`` hooks run once per run, right after the guarded move to
    its final state succeeded (it can succeed only once); ``on_events`` hooks
    run once per ``flush`` that wrote events, with all of them. A hook's
    exception rolls the whole transaction back: a hook that must not break it
    guards itself (``Tx.savepoint``).
    """

    on_run_ended: tuple[RunEndedHook, ...] = ()
    on_events: tuple[EventsHook, ...] = ()


NO_HOOKS = GateHooks()

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


@dataclass
class Tx:
    """One write transaction: the transition gate plus its pending events."""

    conn: Connection
    cache: RunCache
    store: Store | None = None
    now: dt.datetime = field(default_factory=utcnow)
    hooks: GateHooks = NO_HOOKS
    _events: list[dict[str, Any]] = field(default_factory=list, init=False)
    _terminal: dict[str, int] = field(default_factory=dict, init=False)
    _released: list[dict[str, Any]] = field(default_factory=list, init=False)
    _woke: bool = field(default=False, init=False)
    _woken: set[str] = field(default_factory=set, init=False)

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
            [ids[i : i + CHUNK] for i in range(0, len(ids), CHUNK)] if ids is not None else [None]
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

    def run_created(
        self, run_id: str, message: str = "", data: dict[str, Any] | None = None
    ) -> None:
        """Record the ``RunQueued`` event of a run just inserted in ``queued``
        (a run is born in that state: there is no row to move yet)."""
        self._event(run_id, RUN_EVENT[RunState.QUEUED].value, None, None, message, data)

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

    def node_event(
        self, run_id: str, etype: str, node: str, attempt: int, message: str, data: dict[str, Any]
    ) -> None:
        """Queue a node's event that is no transition (``NodeWaiting``)."""
        self._event(run_id, etype, node, attempt, message, data)

    def record_event(self, event: dict[str, Any]) -> None:
        """Queue an event that is no run's or node's transition (a schedule's
        missed tick, say; every column of ``events`` but ``seq``): ``flush``
        writes it with the others and the ``on_events`` hooks see it."""
        self._events.append(event)

    def wake(self, channel: str = WAKE_CHANNEL) -> None:
        """Wake the loops of ``channel`` once this transaction commits."""
        if self.store is None:
            return
        if channel == WAKE_CHANNEL:
            if not self._woke:
                self.store.notify(self.conn)
                self._woke = True
        elif channel not in self._woken:
            self.store.notify(self.conn, channel)
            self._woken.add(channel)

    # -- event order and savepoints -------------------------------------------

    def event_mark(self) -> int:
        """A position in this transaction's pending events (see ``events_before``)."""
        return len(self._events)

    @contextmanager
    def events_before(self, mark: int) -> Iterator[None]:
        """Events recorded inside the block go to ``mark``: ahead of those
        recorded since the mark was taken. (A claim moves nodes first, then
        starts their runs; a run's ``RunRunning`` must precede its nodes'.)"""
        start = len(self._events)
        try:
            yield
        finally:
            if len(self._events) > start and start > mark:
                ahead = self._events[start:]
                del self._events[start:]
                self._events[mark:mark] = ahead

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A nested transaction. When the block raises, its database writes
        and its gate effects (events, count-offs, releases, wake-ups) are
        discarded together, and the exception propagates; the outer
        transaction goes on as if the block had not run."""
        n_events, n_released = len(self._events), len(self._released)
        terminal, woke, woken = dict(self._terminal), self._woke, set(self._woken)
        nested = self.conn.begin_nested()
        try:
            yield
        except BaseException:
            nested.rollback()
            del self._events[n_events:]
            del self._released[n_released:]
            self._terminal, self._woke, self._woken = terminal, woke, woken
            raise
        nested.commit()

    # -- end of transaction ---------------------------------------------------

    def flush(self) -> None:
        """Settle run bookkeeping and write the pending events (same transaction)."""
        self.settle_releases()
        while self._terminal:
            pending, self._terminal = self._terminal, {}
            for run_id, n in pending.items():
                (row,) = _COUNT_OFF.rows(self.conn, {"r_id": run_id, "n": n})
                if row.nodes_remaining <= 0:
                    self.finish_run(run_id, row)
        if self._events:
            written, self._events = self._events, []
            _INSERT_EVENTS.run_many(self.conn, written)
            for hook in self.hooks.on_events:
                hook(self, written)

    def finish_run(self, run_id: str, row: Any) -> bool:
        """End ``run_id``, whose last node reached a final state: ``failed``
        on a timeout or a failed node, ``cancelled`` on a cancel, else
        ``succeeded``. ``row`` holds the run's ``failed_node``,
        ``cancel_requested``, ``cancel_reason`` and ``error``. The
        ``on_run_ended`` hooks run only when this guarded move wins, which
        happens once per run; returns whether it did."""
        if row.cancel_requested and row.cancel_reason == "timeout":
            state, message = RunState.FAILED, row.error or "run timed out"
        elif row.cancel_requested:
            state, message = RunState.CANCELLED, row.cancel_reason or "cancelled"
        elif row.failed_node:
            state = RunState.FAILED
            message = f"step {row.failed_node!r} failed: {row.error or ''}".strip()
        else:
            state, message = RunState.SUCCEEDED, ""
        if not self.move_run(run_id, state, message=message):
            return False
        event = self._events[-1]  # the final-state event move_run just recorded
        for hook in self.hooks.on_run_ended:
            hook(self, run_id, state, event)
        return True

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
        """An attempt succeeded: record its output and release its children
        (guarded by the attempt and the lease holder: a stale result is dropped)."""
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
        for i in range(0, len(desc), CHUNK):
            self.move_nodes(
                NodeState.SKIPPED,
                where=sel_names(run_id, desc[i : i + CHUNK]),
                message=f"upstream step {name!r} failed",
            )
        return NodeState.FAILED

"""Runs: the use cases every interface calls (start, cancel, re-run), and the
wiring of what reacts inside the gate's transactions.

Starting a run is one use case, whoever asks (REST API, compatibility route,
CLI, event triggers; later Slack, schedules, the UI, plugins): the newest
version of the pipeline, parameter validation (every error at once),
idempotency, creation. ``RunService.start`` does all of it;
``start_version`` starts a version the caller already holds (``ferryman run``
registers a file's spec, then runs it); ``creation.create_run`` creates a run
inside a transaction the caller already has.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ferryman.domain.options import NO_OPTIONS, Origin, RunOptions
from ferryman.domain.params import validate_params
from ferryman.domain.states import NodeState, RunState
from ferryman.errors import Conflict, NotFound
from ferryman.services.cache import RunCache
from ferryman.services.callbacks import enqueue_callbacks
from ferryman.services.catalog import PipelineVersion, latest, spec_of_version
from ferryman.services.creation import RunRequest, create_run, find_by_key
from ferryman.services.fanout import enqueue_deliveries
from ferryman.services.gate import GateHooks, Tx
from ferryman.services.triggers import DEFAULT_MAX_DEPTH, TriggerHook
from ferryman.store.engine import DELIVERY_CHANNEL, Store
from ferryman.store.tables import nodes, runs

#: How often a start retries after losing an idempotency-key race.
_KEY_RACE_ATTEMPTS = 3


def _queue_deliveries(tx: Tx, written: Sequence[Mapping[str, Any]]) -> None:
    # Subscribers' deliveries are queued with their events (outbox).
    if enqueue_deliveries(tx.conn, written, tx.now):
        tx.wake(DELIVERY_CHANNEL)


def standard_hooks(trigger_max_depth: int = DEFAULT_MAX_DEPTH) -> GateHooks:
    """What reacts in the gate's transactions: when a run ends, its
    completion callbacks are queued, then the event triggers on its final
    state fire; every batch of events written queues its subscribers'
    deliveries."""
    return GateHooks(
        on_run_ended=(enqueue_callbacks, TriggerHook(trigger_max_depth)),
        on_events=(_queue_deliveries,),
    )


@dataclass(frozen=True)
class StartedRun:
    """The answer to a start: the run (as ``queries.run_dict`` shows it) and
    whether this call created it (False: an idempotency key named it)."""

    record: dict[str, Any]
    created: bool

    @property
    def id(self) -> str:
        """The run's id."""
        return str(self.record["id"])


class RunService:
    """Use cases on runs. Every write goes through a ``Tx`` built here, with
    this service's hooks (``standard_hooks`` unless ``hooks`` replaces them)."""

    def __init__(
        self,
        store: Store,
        cache: RunCache | None = None,
        *,
        trigger_max_depth: int = DEFAULT_MAX_DEPTH,
        hooks: GateHooks | None = None,
    ) -> None:
        self.store = store
        self.cache = cache or RunCache()
        self.hooks = standard_hooks(trigger_max_depth) if hooks is None else hooks

    def tx(self, conn: Connection) -> Tx:
        """The gate for one write transaction on ``conn``."""
        return Tx(conn, self.cache, self.store, hooks=self.hooks)

    # -- start ------------------------------------------------------------------

    def start(
        self,
        namespace: str,
        pipeline: str,
        raw_params: dict[str, Any] | None,
        *,
        options: RunOptions = NO_OPTIONS,
        origin: Origin | None = None,
        labels: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> StartedRun:
        """Start a run of the newest version of ``namespace/pipeline``.

        Raises ``NotFound`` (no such pipeline), ``ParamsInvalid`` (every
        parameter error) or ``Conflict`` (``idempotency_key`` already used for
        another pipeline or other parameters). The same key for the same
        request returns the earlier run with ``created=False``.
        """
        with self.store.read() as conn:
            pv = latest(conn, namespace, pipeline)
        return self.start_version(
            pv,
            raw_params,
            options=options,
            origin=origin,
            labels=labels,
            idempotency_key=idempotency_key,
        )

    def start_version(
        self,
        pv: PipelineVersion,
        raw_params: dict[str, Any] | None,
        *,
        options: RunOptions = NO_OPTIONS,
        origin: Origin | None = None,
        labels: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> StartedRun:
        """Like ``start``, for a version the caller already holds (it has just
        registered it, say)."""
        params = validate_params(pv.spec, raw_params)
        request = RunRequest(
            pv,
            params,
            options=options,
            origin=origin,
            labels=labels or {},
            idempotency_key=idempotency_key,
        )
        return self._create(request)

    def _create(self, request: RunRequest) -> StartedRun:
        """Create ``request``'s run in a transaction of its own (one in all)."""
        key = request.idempotency_key
        for attempt in range(_KEY_RACE_ATTEMPTS):
            try:
                with self.store.write() as conn:
                    if key:
                        existing = find_by_key(conn, request)
                        if existing:
                            return StartedRun(existing, False)
                    tx = self.tx(conn)
                    record = create_run(tx, request)
                    tx.flush()
                self.store.wake_local()
                return StartedRun(record, True)
            except sa.exc.IntegrityError:
                # Two creators raced with one key (unique per namespace): the
                # loser returns the winner's run.
                if not key or attempt == _KEY_RACE_ATTEMPTS - 1:
                    raise
                with self.store.read() as conn:
                    existing = find_by_key(conn, request)
                if existing:
                    return StartedRun(existing, False)
        raise AssertionError("unreachable")

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
        """Flag ``run_id`` cancelled (inside ``tx``): cancel its nodes not
        started, flag the running ones for their workers. ``kind="timeout"``
        makes the run end ``failed`` with ``reason`` as its error."""
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
        request = RunRequest(
            pv,
            row.params,
            options=RunOptions.from_stored(row.options),
            labels=row.labels or {},
            rerun_of=run_id,
            reuse={r.name: r.output for r in done},
        )
        return self._create(request).id

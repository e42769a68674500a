"""Claiming ready steps and preparing their attempts.

A claim moves up to ``limit`` queued nodes to ``running`` with this worker's
lease, in the turn's transaction (``FOR UPDATE SKIP LOCKED`` on PostgreSQL;
SQLite has one writer). Preparing an attempt resolves its inputs (the
outputs of the steps it refers to, in one query per run) and everything its
infrastructure is told (``StepLaunch``). A reference that cannot be resolved
fails the attempt, not the turn. Secrets are resolved later, when the
attempt starts, outside the turn's transaction (``Attempts``, through the
worker's secret resolver chain).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ferryman.domain.spec import iter_refs, resolve
from ferryman.domain.states import NodeState, RunState
from ferryman.engine.clock import Clock
from ferryman.engine.worker.attempts import Attempt
from ferryman.infra.base import StepLaunch
from ferryman.services.gate import Tx
from ferryman.services.selectors import Sel
from ferryman.store.tables import nodes

_CLAIMABLE = sa.text(f"nodes.state IN ('{NodeState.QUEUED.value}', '{NodeState.RETRYING.value}')")
_NEXT_ATTEMPT = {"attempt": nodes.c.attempt + 1}
_OUTPUTS = sa.select(nodes.c.name, nodes.c.output).where(
    nodes.c.run_id == sa.bindparam("o_run"),
    nodes.c.name.in_(sa.bindparam("o_names", expanding=True)),
)
_NEXT_READY = sa.select(sa.func.min(nodes.c.ready_at)).where(
    nodes.c.state.in_([NodeState.QUEUED.value, NodeState.RETRYING.value])
)
_NEXT_READY_RUNS = _NEXT_READY.where(nodes.c.run_id.in_(sa.bindparam("n_runs", expanding=True)))


class Claims:
    """Claims for one worker (``worker_id``), optionally only in ``only_runs``."""

    def __init__(
        self,
        worker_id: str,
        *,
        lease_seconds: float,
        postgres: bool,
        only_runs: set[str] | None,
        clock: Clock,
        max_output_bytes: int | None = None,
    ) -> None:
        self.worker_id = worker_id
        #: Each step's output limit (``settings.worker.max_output_bytes``).
        self.max_output_bytes = max_output_bytes
        self.lease_seconds = lease_seconds
        self.postgres = postgres
        self.only_runs = only_runs
        self.clock = clock
        self.claimed_total = 0

    def claim(self, tx: Tx, limit: int) -> list[Attempt]:
        """Claim up to ``limit`` ready nodes and prepare their attempts."""
        lease = tx.now + dt.timedelta(seconds=self.lease_seconds)
        mark = tx.event_mark()
        only = self.only_runs is not None
        one = only and len(self.only_runs or ()) == 1
        pg = self.postgres

        def build() -> sa.ColumnElement[bool]:
            sub = (
                sa.select(nodes.c.id)
                .where(
                    _CLAIMABLE,
                    nodes.c.ready_at <= sa.bindparam("c_now", type_=nodes.c.ready_at.type),
                )
                .order_by(nodes.c.ready_at, nodes.c.id)
                .limit(sa.bindparam("c_limit"))
            )
            if one:
                sub = sub.where(nodes.c.run_id == sa.bindparam("c_run"))
            elif only:
                sub = sub.where(nodes.c.run_id.in_(sa.bindparam("c_runs", expanding=True)))
            if pg:
                # = ANY(ARRAY(subquery)) makes the locking subquery an InitPlan that
                # runs once; with IN (subquery) the planner may re-run it per row
                # and claim more than `limit` nodes.
                sub = sub.with_for_update(skip_locked=True)
                return nodes.c.id == sa.any_(sa.func.array(sub.scalar_subquery()))
            return nodes.c.id.in_(sub.scalar_subquery())

        params: dict[str, Any] = {"c_now": tx.now, "c_limit": limit}
        if one:
            params["c_run"] = next(iter(self.only_runs or ()))
        elif only:
            params["c_runs"] = sorted(self.only_runs or ())
        rows = tx.move_nodes(
            NodeState.RUNNING,
            where=Sel(f"claim:{only}:{one}:{pg}", build, params, expanding=only and not one),
            values={
                "worker_id": self.worker_id,
                "lease_expires_at": lease,
                "started_at": tx.now,
                "ended_at": None,
                "cancel_requested": False,
                "infra_id": None,
                "launch_nonce": None,
            },
            sql_values=_NEXT_ATTEMPT,
            data={"worker": self.worker_id},
        )
        if not rows:
            return []
        # The run starts with its first claimed node; its event goes first.
        with tx.events_before(mark):
            for run_id in {r.run_id for r in rows}:
                info = tx.cache.get(tx.conn, run_id)
                if not info.started:
                    tx.move_run(run_id, RunState.RUNNING)
                    info.started = True
        self.claimed_total += len(rows)
        return self.prepare(tx, rows)

    def next_ready(self, conn: Connection) -> float | None:
        """When the next queued node becomes ready (monotonic), if any is queued."""
        if self.only_runs is not None:
            at = conn.execute(_NEXT_READY_RUNS, {"n_runs": sorted(self.only_runs)}).scalar()
        else:
            at = conn.execute(_NEXT_READY).scalar()
        if not isinstance(at, dt.datetime):
            return None
        return self.clock.monotonic() + max((at - self.clock.now()).total_seconds(), 0.0)

    def prepare(
        self, tx: Tx, rows: list[Any], nonces: dict[int, str] | None = None
    ) -> list[Attempt]:
        """The attempts of claimed (or adopted) node rows, ready to launch."""
        by_run: dict[str, list[Any]] = {}
        for r in rows:
            by_run.setdefault(r.run_id, []).append(r)
        out: list[Attempt] = []
        for run_id, group in by_run.items():
            info = tx.cache.get(tx.conn, run_id)
            steps = [info.spec.step(r.name) for r in group]
            # only the outputs the inputs actually refer to
            deps = sorted(
                {ref for s in steps for kind, ref in iter_refs(s.inputs) if kind == "$step"}
            )
            outputs: dict[str, Any] = {}
            if deps:
                rows_out = tx.conn.execute(_OUTPUTS, {"o_run": run_id, "o_names": deps}).all()
                outputs = {n: o for n, o in rows_out}
            for r, s in zip(group, steps, strict=True):
                a = Attempt(r.id, run_id, r.name, r.attempt, s)
                a.kind = info.options.infrastructure or s.infrastructure or info.spec.infrastructure
                try:
                    inputs = resolve(s.inputs, info.params, outputs)
                    a.launch = StepLaunch(
                        run_id=run_id,
                        node=r.name,
                        attempt=r.attempt,
                        pipeline=info.pipeline,
                        namespace=info.namespace,
                        step=s,
                        inputs=inputs,
                        params=info.params,
                        nonce=(nonces or {}).get(r.id) or uuid.uuid4().hex,
                        env=dict(s.env),
                        labels=info.labels,
                        overrides={
                            **s.infra_overrides,
                            **info.options.overrides_for(r.name),
                        },
                        max_output_bytes=self.max_output_bytes,
                    )
                except Exception as exc:  # bad reference: fail the attempt
                    a.setup_error = str(exc)
                if s.timeout is not None:
                    a.deadline = self.clock.monotonic() + s.timeout
                out.append(a)
        return out

"""Leases: the worker's heartbeat, renewing the leases of its attempts, the
sweep of attempts whose lease expired, and adopting lost attempts.

Every running node carries the lease of the worker running it. The worker
renews the leases of the attempts it runs itself (never every node under its
id: a process restarted with the same ``--id`` leaves its dead predecessor's
leases to expire) on each heartbeat (and learns of cancel requests for its
attempts on the way); an attempt whose lease it no longer holds (swept by
another worker, or moved on) is stopped at once, so the same attempt never
runs on two workers. The sweep, run by every worker every ``sweep_seconds``,
ends the attempts of lost workers ("worker lost", then retried by their
policy) or, where the infrastructure can re-attach to a started step (a
container, a Kubernetes job), *adopts* them: this worker takes the lease
and watches the same container or job, so nothing runs twice. The sweep also
cancels runs past their deadline.

A worker that was itself cut off from the database (failed turns, or no
turn for half a lease) gives the owners of leases that expired during its
outage one lease period after it reconnects before it sweeps them: in an
outage of the database every worker was cut off, and an owner that finished
steps meanwhile must get to write their results (they are buffered) instead
of having them re-run (``_sweep_bound``).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from typing import Any

import sqlalchemy as sa

from ferryman.domain.states import NodeState, RunState
from ferryman.engine.clock import Clock
from ferryman.engine.worker.attempts import Attempt, Attempts
from ferryman.engine.worker.claims import Claims
from ferryman.services import run_leases
from ferryman.services.gate import Tx
from ferryman.services.runs import RunService
from ferryman.services.selectors import sel_expired
from ferryman.settings import Settings
from ferryman.store.tables import logs, nodes, runs, workers

log = logging.getLogger(__name__)

# SQLite has no NOTIFY: a cancel from another process is polled for while
# attempts run.
CANCEL_POLL_SECONDS = 0.5


class Leases:
    """The lease side of one worker's turns (see the module docstring)."""

    def __init__(
        self,
        worker_id: str,
        settings: Settings,
        *,
        attempts: Attempts,
        claims: Claims,
        service: RunService,
        postgres: bool,
        clock: Clock,
    ) -> None:
        self.worker_id = worker_id
        self.settings = settings
        self.attempts = attempts
        self.claims = claims
        self.service = service
        self.postgres = postgres
        self.clock = clock
        # Set when a cancel may concern our attempts: the next turn renews the
        # leases (which reads the nodes' cancel requests) whatever the schedule.
        self.cancel_pending = threading.Event()
        self.last_renewal = clock.monotonic()
        self._renewing: float | None = None  # renewed in the open transaction
        self._next_heartbeat = 0.0
        self._next_sweep = 0.0
        self._next_cancel_poll = 0.0
        # The outage grace (see ``_sweep_bound``): when this worker last got
        # a turn through (database time and monotonic), whether turns failed
        # since, and until when leases that expired after ``_grace_cutoff``
        # are left to their owners.
        self._ok_now: dt.datetime | None = None
        self._ok_mono: float | None = None
        self._turn_now: tuple[dt.datetime, float] | None = None
        self._cut_off = False
        self._grace_cutoff: dt.datetime | None = None
        self._grace_until = 0.0

    def on_turn(self, tx: Tx, mono: float, *, stopping: bool) -> list[Attempt]:
        """Heartbeat, renew, poll for cancels and sweep, each when due; returns
        the attempts adopted from lost workers."""
        self._note_reconnect(tx.now, mono)
        beat = mono >= self._next_heartbeat
        if beat or self.cancel_pending.is_set():
            self.renew(tx, beat=beat)
            self._renewing = mono
            if beat:
                self._next_heartbeat = mono + self.settings.worker.heartbeat
        if not self.postgres and self.attempts.inflight and mono >= self._next_cancel_poll:
            self.renew(tx, beat=False)
            self._renewing = mono
            self._next_cancel_poll = mono + CANCEL_POLL_SECONDS
        adopted: list[Attempt] = []
        if mono >= self._next_sweep or self._deadline_passed(tx.now):
            adopted = self.sweep(tx, adopt=not stopping)
            self._next_sweep = mono + self.settings.worker.sweep_seconds
        return adopted

    def committed(self) -> None:
        """The turn's transaction committed: what it renewed counts."""
        if self._renewing is not None:
            self.last_renewal, self._renewing = self._renewing, None
        if self._turn_now is not None:
            (self._ok_now, self._ok_mono), self._turn_now = self._turn_now, None

    def rolled_back(self) -> None:
        """The turn failed (the database, most likely): we may be cut off."""
        self._renewing = None
        self._turn_now = None
        self._cut_off = True

    # -- the outage grace -----------------------------------------------------------

    def _note_reconnect(self, now: dt.datetime, mono: float) -> None:
        """Start the outage grace when this turn follows failed turns (or a
        long silence): we could not see the database, and neither, perhaps,
        could the owners of the leases that expired meanwhile."""
        self._turn_now = (now, mono)
        lease = self.settings.worker.lease_seconds
        silent = self._ok_mono is not None and mono - self._ok_mono > lease / 2
        if (self._cut_off or silent) and self._ok_now is not None:
            cutoff = self._ok_now
            if self._grace_cutoff is not None and mono < self._grace_until:
                cutoff = min(cutoff, self._grace_cutoff)  # still in an earlier grace
            self._grace_cutoff = cutoff
            self._grace_until = mono + lease
            log.info(
                "back in touch with the database after %.1fs: leases that expired since "
                "are left to their owners for %gs before they are swept",
                mono - (self._ok_mono or mono),
                lease,
            )
        self._cut_off = False

    def _sweep_bound(self, now: dt.datetime) -> dt.datetime:
        """Leases that expired before this are swept.

        Normally ``now``. For one lease after this worker was cut off from
        the database, only the leases that had expired before it lost touch:
        the owners of the others were most likely cut off too (the same
        outage), hold finished results they could not write, and need a
        turn, after they reconnect, to write them or renew their leases.
        """
        if self._grace_cutoff is not None and self.clock.monotonic() < self._grace_until:
            return min(now, self._grace_cutoff)
        return now

    def next_wait(self, mono: float) -> float:
        """Seconds until a heartbeat, a sweep, a cancel poll or a run deadline is due."""
        wait = min(self._next_heartbeat - mono, self._next_sweep - mono)
        if self.attempts.inflight and not self.postgres:
            wait = min(wait, CANCEL_POLL_SECONDS)
        deadlines = self._run_deadlines()
        if deadlines:
            left = (min(deadlines) - self.clock.now()).total_seconds() + 0.005
            wait = min(wait, left)
        return wait

    def lease_may_be_lost(self, mono: float) -> bool:
        """Whether our leases may have expired (no renewal for most of a lease)."""
        return mono - self.last_renewal > self.settings.worker.lease_seconds * 0.8

    # -- heartbeat and renewal ------------------------------------------------------

    def renew(self, tx: Tx, *, beat: bool) -> None:
        """Renew our leases, pick up cancel requests, stop what we lost (and,
        with ``beat``, record that this worker is alive)."""
        self.cancel_pending.clear()
        lease = tx.now + dt.timedelta(seconds=self.settings.worker.lease_seconds)
        if beat:
            tx.conn.execute(
                sa.update(workers).where(workers.c.id == self.worker_id).values(heartbeat_at=tx.now)
            )
            if self.claims.only_runs is not None:
                # ``ferryman run``: the run itself is leased to this process.
                run_leases.renew(tx.conn, self.worker_id, lease)
        inflight = self.attempts.inflight
        if not inflight:
            return
        # Only the attempts this process runs: a worker restarted under the
        # same ``--id`` must not keep its dead predecessor's leases alive
        # (they expire and are swept like any lost worker's).
        rows = tx.conn.execute(
            sa.update(nodes)
            .where(
                nodes.c.id.in_(list(inflight)),
                nodes.c.worker_id == self.worker_id,
                nodes.c.state == NodeState.RUNNING.value,
            )
            .values(lease_expires_at=lease)
            .returning(nodes.c.id, nodes.c.attempt, nodes.c.cancel_requested)
        ).all()
        held = {(r.id, r.attempt) for r in rows}
        for r in rows:
            a = inflight.get(r.id)
            if a is not None and r.cancel_requested and a.attempt == r.attempt:
                self.attempts.kill(a, "cancel", self.settings.loops.grace_seconds)
        for a in list(inflight.values()):
            if (a.node_id, a.attempt) not in held and a.stop_reason is None:
                # Swept or moved on elsewhere: our copy must not keep running.
                log.warning("lost the lease of %s#%s; stopping it", a.name, a.attempt)
                self.attempts.kill(a, "lease", 0)

    # -- run deadlines --------------------------------------------------------------

    def _run_deadlines(self) -> list[dt.datetime]:
        """Timeouts of the runs whose steps we are running."""
        out = []
        for a in list(self.attempts.inflight.values()):
            info = self.service.cache.peek(a.run_id)
            if info is not None and info.deadline is not None:
                out.append(info.deadline)
        return out

    def _deadline_passed(self, now: dt.datetime) -> bool:
        return any(d <= now for d in self._run_deadlines())

    # -- the sweep ------------------------------------------------------------------

    def sweep(self, tx: Tx, *, adopt: bool) -> list[Attempt]:
        """End (or, with ``adopt``, adopt) the attempts whose lease expired, and
        cancel the runs past their deadline; returns the adopted attempts."""
        # Runs whose ``ferryman run`` process died end first (their steps
        # with them, saying why), not as a "worker lost" retry.
        run_leases.end_orphaned_runs(tx, self.service)
        adoptable: list[Any] = []
        q = (
            sa.select(
                nodes.c.id,
                nodes.c.run_id,
                nodes.c.name,
                nodes.c.attempt,
                nodes.c.worker_id,
                nodes.c.cancel_requested,
                nodes.c.infra_kind,
                nodes.c.infra_id,
                nodes.c.launch_nonce,
                nodes.c.started_at,
            )
            .where(
                nodes.c.state == NodeState.RUNNING.value,
                nodes.c.lease_expires_at < self._sweep_bound(tx.now),
            )
            .limit(500)
        )
        if self.postgres:
            q = q.with_for_update(skip_locked=True)
        for r in tx.conn.execute(q).all():
            if r.id in self.attempts.inflight:
                continue  # ours, still running: the next heartbeat renews the lease
            if adopt and self._adoptable(r):
                adoptable.append(r)
                continue
            info = tx.cache.get(tx.conn, r.run_id)
            step = info.spec.step(r.name)
            msg = f"worker lost: lease of worker {r.worker_id} expired"
            guard = sel_expired(r.attempt, r.worker_id, tx.now)
            delay = None
            if not r.cancel_requested and step.retry_policy.should_retry(r.attempt):
                delay = step.retry_policy.delay_after(r.attempt)
            tx.node_failed(
                r.id,
                r.run_id,
                r.name,
                r.attempt,
                msg,
                retry_policy_delay=delay,
                where=guard,
                cancelled=bool(r.cancel_requested),
            )
            log.warning("%s: %s#%s", msg, r.name, r.attempt)
        overdue = tx.conn.execute(
            sa.select(runs.c.id, runs.c.deadline)
            .where(
                runs.c.state.in_([RunState.QUEUED.value, RunState.RUNNING.value]),
                runs.c.deadline < tx.now,
                runs.c.cancel_requested.is_(False),
            )
            .limit(100)
        ).all()
        for o in overdue:
            secs = tx.cache.get(tx.conn, o.id).timeout
            self.service.request_cancel(tx, o.id, f"run timed out after {secs:g}s", kind="timeout")
            self.cancel_pending.set()
        return self._adopt(tx, adoptable) if adoptable else []

    def _adoptable(self, r: Any) -> bool:
        if not (r.infra_kind and r.infra_id and r.launch_nonce):
            return False
        try:
            return bool(self.attempts.infra.get(r.infra_kind).reattachable)
        except Exception:  # unknown here (not installed on this worker): cannot adopt
            return False

    def _adopt(self, tx: Tx, rows: list[Any]) -> list[Attempt]:
        """Take over the leases of lost attempts that are still running elsewhere."""
        lease = tx.now + dt.timedelta(seconds=self.settings.worker.lease_seconds)
        taken = []
        for r in rows:
            res = tx.conn.execute(
                sa.update(nodes)
                .where(
                    nodes.c.id == r.id,
                    nodes.c.attempt == r.attempt,
                    nodes.c.worker_id == r.worker_id,
                    nodes.c.state == NodeState.RUNNING.value,
                    nodes.c.lease_expires_at < tx.now,
                )
                .values(worker_id=self.worker_id, lease_expires_at=lease)
            )
            if res.rowcount == 1:
                taken.append(r)
        if not taken:
            return []
        last = dict(
            tx.conn.execute(
                sa.select(nodes.c.id, sa.func.max(logs.c.time))
                .select_from(
                    nodes.join(
                        logs,
                        sa.and_(
                            logs.c.run_id == nodes.c.run_id,
                            logs.c.node == nodes.c.name,
                            logs.c.attempt == nodes.c.attempt,
                        ),
                    )
                )
                .where(nodes.c.id.in_([r.id for r in taken]))
                .group_by(nodes.c.id)
            ).all()
        )
        attempts = self.claims.prepare(tx, taken, {r.id: r.launch_nonce for r in taken})
        now = self.clock.now()
        for a, r in zip(attempts, taken, strict=True):
            a.kind = r.infra_kind
            a.identifier = r.infra_id
            a.reattach = True
            a.logs_since = last.get(r.id)
            if a.step.timeout is not None and r.started_at is not None:
                left = a.step.timeout - (now - r.started_at).total_seconds()
                a.deadline = self.clock.monotonic() + max(left, 0.0)
            tx.conn.execute(
                sa.insert(logs).values(
                    run_id=r.run_id,
                    node=r.name,
                    attempt=r.attempt,
                    stream="stderr",
                    line=(
                        f"ferryman: worker {r.worker_id} was lost; worker {self.worker_id} "
                        f"re-attached to {r.infra_kind} {r.infra_id}"
                    ),
                    time=tx.now,
                )
            )
            if r.cancel_requested:
                a.stop_reason = "cancel"
        return attempts

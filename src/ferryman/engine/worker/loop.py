"""The worker loop: claims ready steps, launches them on their infrastructure,
watches them, and records what happened.

The loop thread does every database write of the worker, one transaction
per turn: it writes buffered log lines, records the infrastructure
identifiers of attempts that started, applies finished attempts (which
queues their children), renews leases, sweeps expired leases and finally
claims new work (``FOR UPDATE SKIP LOCKED`` on PostgreSQL). Batching the
writes this way is what makes thousands of tiny steps cheap, and it keeps
SQLite to one writer per process. Attempts themselves run in a thread pool
(``attempts.py``: blocking SDKs and process pipes live there) and report
back through the inbox; claiming and preparing attempts is ``claims.py``,
heartbeats, leases, the sweep and adoption ``leases.py``.

The lifecycle (wake-ups, sleep, drain, shutdown with grace) is the loop
base's (``engine/loop.py``): a new run or a cancel is seen within
milliseconds; ``poll_seconds`` is only a fallback.
"""

from __future__ import annotations

import os
import socket
import uuid

import sqlalchemy as sa

from ferryman.domain.states import RunState
from ferryman.engine.clock import Clock
from ferryman.engine.loop import Loop
from ferryman.engine.worker.attempts import Attempt, Attempts, Buffers, Outcome
from ferryman.engine.worker.claims import Claims
from ferryman.engine.worker.leases import Leases
from ferryman.http.base import destination_policy
from ferryman.infra.base import TASK_STATE
from ferryman.infra.registry import InfraPool
from ferryman.plugins.limits import infra_configs
from ferryman.secret_resolvers.base import SecretResolver
from ferryman.secret_resolvers.chain import resolver_chain
from ferryman.services.gate import Tx
from ferryman.services.runs import RunService
from ferryman.services.task_state import DbTaskState
from ferryman.settings import Settings
from ferryman.store.engine import CANCEL_CHANNEL, WAKE_CHANNEL, Store
from ferryman.store.tables import logs, nodes, runs, workers


class Worker(Loop):
    """Claims and runs steps until stopped; ``run_until(run_ids)`` drains
    (the CLI's embedded runs, tests)."""

    name = "worker"
    channels = (WAKE_CHANNEL, CANCEL_CHANNEL)
    abort_seconds = 5.0  # after the grace: for killed attempts to come back

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        only_runs: set[str] | None = None,
        worker_id: str | None = None,
        concurrency: int | None = None,
        infra: InfraPool | None = None,
        clock: Clock | None = None,
        secrets: SecretResolver | None = None,
    ) -> None:
        super().__init__(
            store,
            poll_seconds=settings.loops.poll_seconds,
            grace_seconds=settings.loops.grace_seconds,
            clock=clock,
        )
        self.settings = settings
        # Cut off from the database, retry at least once a heartbeat: after
        # an outage an owner must be back well within the one lease that the
        # other workers' sweepers give it (``leases.py``, the outage grace).
        self.retry_max = min(type(self).retry_max, settings.worker.heartbeat)
        self.service = RunService(store, trigger_max_depth=settings.worker.trigger_max_depth)
        self.only_runs = only_runs
        self.id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.concurrency = concurrency or settings.worker.concurrency
        if infra is None:
            infra = InfraPool(infra_configs(settings))
            infra.validate()  # a bad configuration stops the worker at start
        if TASK_STATE not in infra.context:
            # What infrastructures keep beyond this process (the task
            # infrastructure's resource meta, limiters, quotas): in the database.
            infra.context = {
                **infra.context,
                TASK_STATE: DbTaskState(store, self.service.hooks),
                "http_policy": destination_policy(settings),
            }
        self.infra = infra
        if secrets is None:
            # FERRYMAN_SECRETS_RESOLVERS; a bad configuration stops the worker at start
            secrets = resolver_chain(settings, store)
        self.attempts = Attempts(
            infra, self.concurrency, settings.loops.grace_seconds, self.wake, secrets
        )
        self.claims = Claims(
            self.id,
            lease_seconds=settings.worker.lease_seconds,
            postgres=store.is_postgres,
            only_runs=only_runs,
            clock=self.clock,
            max_output_bytes=settings.worker.max_output_bytes,
        )
        self.leases = Leases(
            self.id,
            settings,
            attempts=self.attempts,
            claims=self.claims,
            service=self.service,
            postgres=store.is_postgres,
            clock=self.clock,
        )
        self._cancel_seen = store.cancel_generation
        self._drain_runs: set[str] | None = None
        self._claimed_last = 0
        self._registered = False

    @property
    def claimed_total(self) -> int:
        """Attempts this worker has claimed since it was made."""
        return self.claims.claimed_total

    # -- lifecycle ----------------------------------------------------------------------

    def register(self) -> None:
        """Record this worker in ``workers`` (``ferryman workers``, heartbeats)."""
        now = self.clock.now()
        with self.store.write() as conn:
            # A stable id (systemd, Kubernetes) may be reused by a new process.
            conn.execute(sa.delete(workers).where(workers.c.id == self.id))
            conn.execute(
                sa.insert(workers).values(
                    id=self.id,
                    hostname=socket.gethostname(),
                    pid=os.getpid(),
                    started_at=now,
                    heartbeat_at=now,
                )
            )
        self._registered = True

    def run_until(self, run_ids: set[str], timeout: float | None = None) -> None:
        """Serve until every run in ``run_ids`` has ended (drain mode);
        ``TimeoutError`` after ``timeout`` seconds."""
        self._drain_runs = set(run_ids)
        self.run_until_idle(timeout)

    def begin(self) -> None:
        if not self.draining:  # a drain (``ferryman run``) is no worker of the fleet
            self.register()

    def idle(self) -> bool:
        """Drain mode: nothing claimed by the last turn, nothing running here,
        and every run drained has ended (or, draining without runs, nothing
        is queued for this worker)."""
        if self._claimed_last or self.attempts.inflight:
            return False
        if self._drain_runs is None:
            return self.next_due is None
        with self.store.read() as conn:
            states = (
                conn.execute(sa.select(runs.c.state).where(runs.c.id.in_(self._drain_runs)))
                .scalars()
                .all()
            )
        return len(states) == len(self._drain_runs) and all(RunState(s).terminal for s in states)

    def in_flight(self) -> bool:
        return bool(self.attempts.inflight)

    def retryable(self, exc: Exception) -> bool:
        # A database error is retried; a bug ends ``run`` (and the attempts).
        return isinstance(exc, sa.exc.SQLAlchemyError)

    def turn_failed(self, exc: Exception) -> None:
        # While the database is unreachable our leases cannot be renewed. Once
        # they may have expired, somebody else may legitimately start the same
        # steps again, so we stop our copies first ("lease lost"): the same
        # step attempt never runs on two workers at once.
        if self.leases.lease_may_be_lost(self.clock.monotonic()):
            self.attempts.kill_all("lease")

    def next_wait(self) -> float:
        if self.attempts.inbox.busy() or self.leases.cancel_pending.is_set():
            return 0.0
        mono = self.clock.monotonic()
        wait = min(self.poll_seconds, self.leases.next_wait(mono))
        deadline = self.attempts.next_deadline()
        if deadline is not None:
            wait = min(wait, deadline - mono)
        # A due node matters only with a free slot; a finished attempt wakes us.
        if self.next_due is not None and self.attempts.free > 0:
            wait = min(wait, self.next_due - mono)
        return wait

    def abort(self) -> None:
        self.attempts.kill_all("shutdown")

    def finish(self) -> None:
        if not self._registered:
            return
        try:
            with self.store.write() as conn:
                conn.execute(
                    sa.update(workers)
                    .where(workers.c.id == self.id)
                    .values(stopped_at=self.clock.now())
                )
        except sa.exc.SQLAlchemyError:
            self.log.warning("could not mark worker %s stopped", self.id)

    def release(self) -> None:
        self.attempts.close()

    # -- one turn: every write of the worker in one transaction ---------------------------

    def turn(self) -> int:
        """Do one round of work; returns how many attempts were claimed (or adopted)."""
        buf = self.attempts.inbox.take()
        mono = self.clock.monotonic()
        self.attempts.check_deadlines(mono)
        generation = self.store.cancel_generation
        if generation != self._cancel_seen:
            self._cancel_seen = generation
            self.leases.cancel_pending.set()
        try:
            claimed = self._turn_tx(buf, mono)
        except BaseException:
            self.attempts.inbox.put_back(buf)  # nothing is lost: the next turn writes it
            self.leases.rolled_back()
            raise
        self.leases.committed()
        for a in claimed:
            self.attempts.submit(a)
        self._claimed_last = len(claimed)
        return len(claimed)

    def _turn_tx(self, buf: Buffers, mono: float) -> list[Attempt]:
        with self.store.write() as conn:
            tx = self.service.tx(conn)
            if buf.logs:
                conn.execute(sa.insert(logs), buf.logs)
            for a in buf.started:
                conn.execute(
                    sa.update(nodes)
                    .where(
                        nodes.c.id == a.node_id,
                        nodes.c.worker_id == self.id,
                        nodes.c.attempt == a.attempt,
                    )
                    .values(
                        infra_kind=a.kind,
                        infra_id=a.identifier,
                        launch_nonce=a.launch.nonce if a.launch else None,
                    )
                )
            for o in buf.done:
                self._apply(tx, o)
            claimed = self.leases.on_turn(tx, mono, stopping=self.stopping)
            tx.settle_releases()
            free = self.attempts.free - len(claimed)  # adopted attempts count too
            if free > 0 and not self.stopping:
                got = self.claims.claim(tx, free)
                if not got:
                    self.next_due = self.claims.next_ready(conn)
                claimed.extend(got)
            tx.flush()
        return claimed

    def _apply(self, tx: Tx, o: Outcome) -> None:
        a = o.attempt
        self.attempts.ended(a)
        if o.ok:
            done = tx.node_succeeded(
                a.node_id,
                a.run_id,
                a.name,
                a.attempt,
                o.output,
                o.has_output,
                worker=self.id,
                exit_code=o.exit_code,
            )
            if not done:
                self.log.warning("result of %s#%s dropped: the node moved on", a.name, a.attempt)
            return
        cancelled = a.stop_reason == "cancel"
        delay = None
        error = o.error
        if not cancelled:
            policy = a.step.retry_policy
            if policy.should_retry(a.attempt) and not _run_cancelling(tx, a.run_id):
                if o.no_retry is None:
                    delay = policy.delay_after(a.attempt)
                else:  # retries left, but not for this failure: say so
                    error = f"{error} ({o.no_retry})"
        tx.node_failed(
            a.node_id,
            a.run_id,
            a.name,
            a.attempt,
            error,
            retry_policy_delay=delay,
            worker=self.id,
            exit_code=o.exit_code,
            cancelled=cancelled,
        )
        if delay is not None:
            due = self.clock.monotonic() + delay
            self.next_due = due if self.next_due is None else min(self.next_due, due)


def _run_cancelling(tx: Tx, run_id: str) -> bool:
    return bool(
        tx.conn.execute(sa.select(runs.c.cancel_requested).where(runs.c.id == run_id)).scalar()
    )

"""The worker: claims ready steps, launches them on their infrastructure,
watches them, and records what happened.

One loop thread does every database write of the worker, one transaction per
turn: it writes buffered log lines, records the infrastructure identifiers
of attempts that started, applies finished attempts (which queues their
children), renews leases, sweeps expired leases and finally claims new work
(``FOR UPDATE SKIP LOCKED`` on PostgreSQL). Batching the writes this way is
what makes thousands of tiny steps cheap, and it keeps SQLite to one writer
per process. Attempts themselves run in a thread pool (blocking SDKs and
process pipes live there), and report back through queues.

Wake-ups: an in-process event (embedded) and PostgreSQL ``LISTEN/NOTIFY``,
so a new run or a cancel is seen within milliseconds; ``poll_seconds`` is
only a fallback.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ferryman.domain.spec import StepSpec, iter_refs, resolve
from ferryman.domain.states import NodeState, RunState
from ferryman.infra.base import OutputCapture, StepLaunch
from ferryman.infra.registry import InfraPool, check_step
from ferryman.infra.step_kinds import step_kind
from ferryman.services.gate import Tx
from ferryman.services.runs import RunService
from ferryman.services.selectors import Sel, sel_expired
from ferryman.settings import Settings
from ferryman.store.engine import CANCEL_CHANNEL, WAKE_CHANNEL, Store
from ferryman.store.tables import logs, nodes, runs, utcnow, workers

log = logging.getLogger(__name__)


_CLAIMABLE = sa.text(f"nodes.state IN ('{NodeState.QUEUED.value}', '{NodeState.RETRYING.value}')")
CANCEL_POLL_SECONDS = 0.5
_NEXT_ATTEMPT = {"attempt": nodes.c.attempt + 1}
_OUTPUTS = sa.select(nodes.c.name, nodes.c.output).where(
    nodes.c.run_id == sa.bindparam("o_run"),
    nodes.c.name.in_(sa.bindparam("o_names", expanding=True)),
)
_NEXT_READY = sa.select(sa.func.min(nodes.c.ready_at)).where(
    nodes.c.state.in_([NodeState.QUEUED.value, NodeState.RETRYING.value])
)
_NEXT_READY_RUNS = _NEXT_READY.where(nodes.c.run_id.in_(sa.bindparam("n_runs", expanding=True)))


@dataclass
class Attempt:
    """One attempt of one node running on this worker."""

    node_id: int
    run_id: str
    name: str
    attempt: int
    step: StepSpec
    launch: StepLaunch | None = None
    kind: str = "process"
    identifier: str | None = None
    deadline: float | None = None
    stop_reason: str | None = None  # "timeout" | "cancel" | "lease" | "shutdown"
    kill_sent: bool = False
    setup_error: str | None = None
    # set when this worker adopted the attempt from a lost worker (re-attach)
    reattach: bool = False
    logs_since: dt.datetime | None = None


@dataclass
class Outcome:
    attempt: Attempt
    ok: bool
    output: Any = None
    has_output: bool = False
    error: str = ""
    exit_code: int | None = None


@dataclass
class _Buffers:
    logs: list[dict[str, Any]] = field(default_factory=list)
    started: list[Attempt] = field(default_factory=list)
    done: list[Outcome] = field(default_factory=list)


class Worker:
    """Claims and runs steps until stopped. ``run_until`` drains for tests/CLI."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        only_runs: set[str] | None = None,
        worker_id: str | None = None,
        concurrency: int | None = None,
        infra: InfraPool | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.service = RunService(store, trigger_max_depth=settings.trigger_max_depth)
        self.only_runs = only_runs
        self.id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.concurrency = concurrency or settings.concurrency
        if infra is None:
            infra = InfraPool(settings.infra_config)
            infra.validate()  # a bad configuration stops the worker at start
        self.infra = infra
        self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="ferryman-step")
        self._killers = ThreadPoolExecutor(4, thread_name_prefix="ferryman-kill")
        self._lock = threading.Lock()
        self._buf = _Buffers()
        self._inflight: dict[int, Attempt] = {}
        self._wake = store.subscribe()
        self._cancel_flag = threading.Event()
        self._stop = threading.Event()
        self._stopping = False
        self._next_heartbeat = 0.0
        self._next_sweep = 0.0
        self._next_due: float | None = None
        self._listener: threading.Thread | None = None
        self.claimed_total = 0
        self._cancel_seen = store.cancel_generation
        self._db_failures = 0
        self._last_lease_renewal = time.monotonic()
        self._next_cancel_poll = 0.0

    # -- lifecycle ----------------------------------------------------------

    def start_listener(self) -> None:
        """On PostgreSQL, LISTEN for wake-ups from other processes."""
        if not self.store.is_postgres or self._listener is not None:
            return
        self._listener = threading.Thread(target=self._listen, name="ferryman-listen", daemon=True)
        self._listener.start()

    def _listen(self) -> None:
        import psycopg

        url = self.store.url.set(drivername="postgresql").render_as_string(hide_password=False)
        while not self._stop.is_set():
            try:
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {WAKE_CHANNEL}")
                    conn.execute(f"LISTEN {CANCEL_CHANNEL}")
                    while not self._stop.is_set():
                        for n in conn.notifies(timeout=1.0):
                            if n.channel == CANCEL_CHANNEL:
                                self._cancel_flag.set()
                            self._wake.set()
            except psycopg.Error as exc:  # reconnect after a database hiccup
                log.warning("LISTEN connection lost (%s); reconnecting", exc)
                self._stop.wait(1.0)

    def register(self) -> None:
        now = utcnow()
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

    def run(self) -> None:
        """Serve until ``stop()`` is called."""
        self.register()
        self.start_listener()
        try:
            while not self._stop.is_set():
                if self._safe_turn() is not None:
                    self._sleep()
        finally:
            self._shutdown()

    def run_until(self, run_ids: set[str], timeout: float | None = None) -> None:
        """Serve until every run in ``run_ids`` has ended (drain mode)."""
        self.start_listener()
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while not self._stop.is_set():
                claimed = self._safe_turn()
                if claimed is None:
                    continue
                if not claimed and not self._inflight and self._all_ended(run_ids):
                    return
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"runs did not end within {timeout}s")
                self._sleep()
        finally:
            self._shutdown()

    def _safe_turn(self) -> int | None:
        """A turn that survives database outages (None: it failed; we waited).

        While the database is unreachable our leases cannot be renewed. Once
        they may have expired, somebody else may legitimately start the same
        steps again, so we stop our copies first ("lease lost"): the same
        step attempt never runs on two workers at once.
        """
        try:
            claimed = self.turn()
        except sa.exc.SQLAlchemyError as exc:
            self._db_failures += 1
            delay = min(0.1 * 2**self._db_failures, 5.0)
            log.warning("database error (%s); retrying in %.1fs", type(exc).__name__, delay)
            since = time.monotonic() - self._last_lease_renewal
            if since > self.settings.lease_seconds * 0.8:
                for a in list(self._inflight.values()):
                    self._request_kill(a, "lease", 0)
            self._stop.wait(delay)
            return None
        self._db_failures = 0
        return claimed

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _all_ended(self, run_ids: set[str]) -> bool:
        with self.store.read() as conn:
            states = (
                conn.execute(sa.select(runs.c.state).where(runs.c.id.in_(run_ids))).scalars().all()
            )
        return len(states) == len(run_ids) and all(RunState(s).terminal for s in states)

    def _run_deadlines(self) -> list[dt.datetime]:
        """Timeouts of the runs whose steps we are running."""
        out = []
        for a in list(self._inflight.values()):
            info = self.service.cache.peek(a.run_id)
            if info is not None and info.deadline is not None:
                out.append(info.deadline)
        return out

    def _deadline_passed(self, now: dt.datetime) -> bool:
        return any(d <= now for d in self._run_deadlines())

    def _sleep(self) -> None:
        # Clear first, then look: a wake-up arriving in between is never lost.
        self._wake.clear()
        with self._lock:
            busy = bool(self._buf.done or self._buf.started or self._buf.logs)
        if busy:
            return
        now = time.monotonic()
        wait = self.settings.poll_seconds
        wait = min(wait, self._next_heartbeat - now, self._next_sweep - now)
        for a in list(self._inflight.values()):
            if a.deadline is not None and not a.kill_sent:
                wait = min(wait, a.deadline - now)
        if self._next_due is not None:
            wait = min(wait, self._next_due - now)
        deadlines = self._run_deadlines()
        if deadlines:
            wait = min(wait, (min(deadlines) - utcnow()).total_seconds() + 0.005)
        if self.store.is_sqlite and self._inflight:
            wait = min(wait, CANCEL_POLL_SECONDS)
        if wait > 0:
            self._wake.wait(wait)

    def _shutdown(self) -> None:
        # Nothing here may stop us from killing what still runs.
        self._stopping = True
        grace_end = time.monotonic() + self.settings.grace_seconds
        while self._inflight and time.monotonic() < grace_end:
            self._safe_turn()
            self._wake.wait(0.05)
            self._wake.clear()
        for a in list(self._inflight.values()):
            self._request_kill(a, "shutdown", 0)
        end = time.monotonic() + 5
        while self._inflight and time.monotonic() < end:
            if self._safe_turn() is None and self._db_failures > 3:
                break
            self._wake.wait(0.05)
            self._wake.clear()
        self._stop.set()
        try:
            with self.store.write() as conn:
                conn.execute(
                    sa.update(workers).where(workers.c.id == self.id).values(stopped_at=utcnow())
                )
        except sa.exc.SQLAlchemyError:
            log.warning("could not mark worker %s stopped", self.id)
        self.store.unsubscribe(self._wake)
        if self._listener is not None:
            self._listener.join(3)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._killers.shutdown(wait=False)
        self.infra.close()

    # -- one turn: every write of the worker in one transaction ---------------

    def turn(self) -> int:
        """Do one round of work; returns how many attempts were claimed."""
        with self._lock:
            buf, self._buf = self._buf, _Buffers()
        mono = time.monotonic()
        self._check_deadlines(mono)
        if self.store.cancel_generation != self._cancel_seen:
            self._cancel_seen = self.store.cancel_generation
            self._cancel_flag.set()
        claimed: list[Attempt] = []
        try:
            claimed = self._turn_tx(buf, mono)
        except BaseException:
            with self._lock:  # nothing is lost: put the buffers back for the next turn
                self._buf.logs[:0] = buf.logs
                self._buf.started[:0] = buf.started
                self._buf.done[:0] = buf.done
            raise
        for a in claimed:
            self._inflight[a.node_id] = a
            self._pool.submit(self._execute, a)
        return len(claimed)

    def _turn_tx(self, buf: _Buffers, mono: float) -> list[Attempt]:
        claimed: list[Attempt] = []
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
            renewed = False
            if mono >= self._next_heartbeat or self._cancel_flag.is_set():
                self._heartbeat(tx, beat=mono >= self._next_heartbeat)
                renewed = True
                if mono >= self._next_heartbeat:
                    self._next_heartbeat = mono + self.settings.heartbeat
            if self.store.is_sqlite and self._inflight and mono >= self._next_cancel_poll:
                # SQLite has no NOTIFY: a cancel from another process is polled for.
                self._heartbeat(tx, beat=False)
                self._next_cancel_poll = mono + CANCEL_POLL_SECONDS
            if mono >= self._next_sweep or self._deadline_passed(tx.now):
                claimed.extend(self._sweep(tx))
                self._next_sweep = mono + self.settings.sweep_seconds
            tx.settle_releases()
            free = self.concurrency - len(self._inflight)
            free -= len(claimed)  # adopted attempts count too
            if free > 0 and not self._stopping:
                claimed.extend(self._claim(tx, free))
            tx.flush()
        if renewed:
            self._last_lease_renewal = mono
        return claimed

    # -- claiming -------------------------------------------------------------

    def _claim(self, tx: Tx, limit: int) -> list[Attempt]:
        lease = tx.now + _seconds(self.settings.lease_seconds)
        mark = tx.event_mark()
        only = self.only_runs is not None
        one = only and len(self.only_runs or ()) == 1
        pg = self.store.is_postgres

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
                "worker_id": self.id,
                "lease_expires_at": lease,
                "started_at": tx.now,
                "ended_at": None,
                "cancel_requested": False,
                "infra_id": None,
                "launch_nonce": None,
            },
            sql_values=_NEXT_ATTEMPT,
            data={"worker": self.id},
        )
        if not rows:
            self._next_due = self._next_ready(tx.conn)
            return []
        # The run starts with its first claimed node; its event goes first.
        with tx.events_before(mark):
            for run_id in {r.run_id for r in rows}:
                info = tx.cache.get(tx.conn, run_id)
                if not info.started:
                    tx.move_run(run_id, RunState.RUNNING)
                    info.started = True
        self.claimed_total += len(rows)
        return self._prepare(tx, rows)

    def _next_ready(self, conn: Connection) -> float | None:
        if self.only_runs is not None:
            at = conn.execute(_NEXT_READY_RUNS, {"n_runs": sorted(self.only_runs)}).scalar()
        else:
            at = conn.execute(_NEXT_READY).scalar()
        if not isinstance(at, dt.datetime):
            return None
        return time.monotonic() + max((at - utcnow()).total_seconds(), 0.0)

    def _prepare(
        self, tx: Tx, rows: list[Any], nonces: dict[int, str] | None = None
    ) -> list[Attempt]:
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
                a.kind = (
                    info.options.infrastructure or s.infrastructure or (info.spec.infrastructure)
                )
                try:
                    inputs = resolve(s.inputs, info.params, outputs)
                    secrets = _secret_values(s.secrets)
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
                        secrets=secrets,
                        labels=info.labels,
                        overrides={
                            **s.infra_overrides,
                            **info.options.overrides_for(r.name),
                        },
                    )
                except Exception as exc:  # bad reference or secret: fail the attempt
                    a.setup_error = str(exc)
                timeout = s.timeout
                if timeout is not None:
                    a.deadline = time.monotonic() + timeout
                out.append(a)
        return out

    # -- running an attempt (pool thread) -------------------------------------

    def _execute(self, a: Attempt) -> None:
        try:
            outcome = self._run_attempt(a)
        except Exception as exc:  # never lose an attempt to a bug in a backend
            log.exception("attempt %s/%s#%s crashed", a.run_id, a.name, a.attempt)
            outcome = Outcome(a, ok=False, error=f"internal error: {type(exc).__name__}: {exc}")
        with self._lock:
            self._buf.done.append(outcome)
        self._wake.set()

    def _run_attempt(self, a: Attempt) -> Outcome:
        if a.setup_error is not None or a.launch is None:
            return Outcome(a, ok=False, error=a.setup_error or "could not prepare the step")
        launch = a.launch
        infra = self.infra.get(a.kind)
        capture = OutputCapture(launch.nonce, lambda s, line: self._log(a, s, line), launch.mask)
        if a.reattach and a.identifier is not None:
            ident = a.identifier
            try:
                alive = infra.attach(ident, capture, a.logs_since)
            except Exception as exc:
                alive = False
                log.warning("could not re-attach to %s %s: %s", a.kind, ident, exc)
            if not alive:
                return Outcome(
                    a,
                    ok=False,
                    error=f"worker lost, and its {a.kind} {ident} is gone: cannot re-attach",
                )
            log.warning("re-attached to %s %s (%s#%s)", a.kind, ident, a.name, a.attempt)
        else:
            try:
                check_step(type(infra), launch.step)
                ident = infra.start(launch, capture)
            except Exception as exc:
                return Outcome(a, ok=False, error=f"could not start on {a.kind}: {exc}")
            a.identifier = ident
        if infra.records_identifier and not a.reattach:
            with self._lock:
                self._buf.started.append(a)
            self._wake.set()
        if a.stop_reason is not None and not a.kill_sent:
            self._request_kill(a, a.stop_reason, self.settings.grace_seconds)
        result = infra.watch(ident)
        outcome = self._outcome(a, result.status_code, capture, result.reason)
        outcome.error = launch.mask(outcome.error)  # errors are shown and stored: no secrets
        return outcome

    def _outcome(
        self, a: Attempt, code: int, capture: OutputCapture, reason: str | None
    ) -> Outcome:
        if a.stop_reason == "timeout":
            return Outcome(a, False, error=f"timed out after {a.step.timeout:g}s", exit_code=code)
        if a.stop_reason == "cancel":
            return Outcome(a, False, error="cancelled", exit_code=code)
        if a.stop_reason == "shutdown":
            return Outcome(a, False, error="worker shut down before the step ended", exit_code=code)
        if a.stop_reason == "lease":
            return Outcome(a, False, error="lease lost", exit_code=code)
        r = step_kind(a.step.kind).read_result(a.step, code, capture, reason)
        return Outcome(a, r.ok, r.output, r.has_output, r.error, exit_code=code)

    def _log(self, a: Attempt, stream: str, line: str) -> None:
        rec = {
            "run_id": a.run_id,
            "node": a.name,
            "attempt": a.attempt,
            "stream": stream,
            "line": line,
            "time": utcnow(),
        }
        with self._lock:
            first = not self._buf.logs
            self._buf.logs.append(rec)
        if first:
            self._wake.set()

    # -- applying outcomes ----------------------------------------------------

    def _apply(self, tx: Tx, o: Outcome) -> None:
        a = o.attempt
        self._inflight.pop(a.node_id, None)
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
                log.warning("result of %s#%s dropped: the node moved on", a.name, a.attempt)
            return
        cancelled = a.stop_reason == "cancel"
        delay = None
        if not cancelled:
            policy = a.step.retry_policy
            if policy.should_retry(a.attempt) and not self._run_cancelling(tx, a.run_id):
                delay = policy.delay_after(a.attempt)
        tx.node_failed(
            a.node_id,
            a.run_id,
            a.name,
            a.attempt,
            o.error,
            retry_policy_delay=delay,
            worker=self.id,
            exit_code=o.exit_code,
            cancelled=cancelled,
        )
        if delay is not None:
            due = time.monotonic() + delay
            self._next_due = due if self._next_due is None else min(self._next_due, due)

    @staticmethod
    def _run_cancelling(tx: Tx, run_id: str) -> bool:
        return bool(
            tx.conn.execute(sa.select(runs.c.cancel_requested).where(runs.c.id == run_id)).scalar()
        )

    # -- leases, cancellation, timeouts ---------------------------------------

    def _heartbeat(self, tx: Tx, *, beat: bool) -> None:
        self._cancel_flag.clear()
        if beat:
            tx.conn.execute(
                sa.update(workers).where(workers.c.id == self.id).values(heartbeat_at=tx.now)
            )
        if not self._inflight:
            return
        lease = tx.now + _seconds(self.settings.lease_seconds)
        rows = tx.conn.execute(
            sa.update(nodes)
            .where(nodes.c.worker_id == self.id, nodes.c.state == NodeState.RUNNING.value)
            .values(lease_expires_at=lease)
            .returning(nodes.c.id, nodes.c.attempt, nodes.c.cancel_requested)
        ).all()
        held = {(r.id, r.attempt) for r in rows}
        for r in rows:
            a = self._inflight.get(r.id)
            if a is not None and r.cancel_requested and a.attempt == r.attempt:
                self._request_kill(a, "cancel", self.settings.grace_seconds)
        for a in list(self._inflight.values()):
            if (a.node_id, a.attempt) not in held and a.stop_reason is None:
                # Swept or moved on elsewhere: our copy must not keep running.
                log.warning("lost the lease of %s#%s; stopping it", a.name, a.attempt)
                self._request_kill(a, "lease", 0)

    def _check_deadlines(self, mono: float) -> None:
        for a in list(self._inflight.values()):
            if a.deadline is not None and mono >= a.deadline and a.stop_reason is None:
                self._request_kill(a, "timeout", self.settings.grace_seconds)

    def _request_kill(self, a: Attempt, reason: str, grace: float) -> None:
        if a.stop_reason is None:
            a.stop_reason = reason
        if a.identifier is None or a.kill_sent:
            return  # _run_attempt kills it as soon as it has started
        a.kill_sent = True
        infra = self.infra.get(a.kind)
        ident = a.identifier
        self._killers.submit(_safe_kill, infra, ident, grace)

    def _sweep(self, tx: Tx) -> list[Attempt]:
        """Recover the steps of dead workers and enforce run deadlines.

        A step whose infrastructure can re-attach (a container, a Kubernetes
        job) and that had started is *adopted*: this worker takes its lease
        and watches the same container or job, so nothing runs twice. Other
        lost steps fail ("worker lost") and are retried by their policy.
        Returns the adopted attempts."""
        adopt: list[Any] = []
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
            .where(nodes.c.state == NodeState.RUNNING.value, nodes.c.lease_expires_at < tx.now)
            .limit(500)
        )
        if self.store.is_postgres:
            q = q.with_for_update(skip_locked=True)
        for r in tx.conn.execute(q).all():
            if r.id in self._inflight:
                continue  # ours, still running: the next heartbeat renews the lease
            if self._adoptable(r) and not self._stopping:
                adopt.append(r)
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
            info = tx.cache.get(tx.conn, o.id)
            secs = info.timeout
            self.service.request_cancel(tx, o.id, f"run timed out after {secs:g}s", kind="timeout")
            self._cancel_flag.set()
        return self._adopt(tx, adopt) if adopt else []

    def _adoptable(self, r: Any) -> bool:
        if not (r.infra_kind and r.infra_id and r.launch_nonce):
            return False
        try:
            return bool(self.infra.get(r.infra_kind).reattachable)
        except Exception:  # unknown here (not installed on this worker): cannot adopt
            return False

    def _adopt(self, tx: Tx, rows: list[Any]) -> list[Attempt]:
        """Take over the leases of lost attempts that are still running elsewhere."""
        lease = tx.now + _seconds(self.settings.lease_seconds)
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
                .values(worker_id=self.id, lease_expires_at=lease)
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
        attempts = self._prepare(tx, taken, {r.id: r.launch_nonce for r in taken})
        now = utcnow()
        for a, r in zip(attempts, taken, strict=True):
            a.kind = r.infra_kind
            a.identifier = r.infra_id
            a.reattach = True
            a.logs_since = last.get(r.id)
            if a.step.timeout is not None and r.started_at is not None:
                left = a.step.timeout - (now - r.started_at).total_seconds()
                a.deadline = time.monotonic() + max(left, 0.0)
            tx.conn.execute(
                sa.insert(logs).values(
                    run_id=r.run_id,
                    node=r.name,
                    attempt=r.attempt,
                    stream="stderr",
                    line=(
                        f"ferryman: worker {r.worker_id} was lost; worker {self.id} "
                        f"re-attached to {r.infra_kind} {r.infra_id}"
                    ),
                    time=tx.now,
                )
            )
            if r.cancel_requested:
                a.stop_reason = "cancel"
        return attempts


def _safe_kill(infra: Any, ident: str, grace: float) -> None:
    try:
        infra.kill(ident, grace)
    except Exception:
        log.exception("could not kill %s", ident)


def _seconds(s: float) -> dt.timedelta:
    return dt.timedelta(seconds=s)


def _secret_values(names: list[str]) -> dict[str, str]:
    """Secret references are resolved from the worker's environment."""
    out: dict[str, str] = {}
    missing = []
    for n in names:
        v = os.environ.get(n)
        if v is None:
            missing.append(n)
        else:
            out[n] = v
    if missing:
        raise ValueError(f"secret(s) not set in the worker's environment: {', '.join(missing)}")
    return out

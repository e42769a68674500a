"""Running attempts: each on its infrastructure, in the worker's thread pool.

An attempt thread starts the step (or re-attaches to it), blocks in
``watch`` and reads the outcome, through the step kind unless the worker
stopped the attempt itself (timeout, cancel, shutdown, lost lease). It hands
everything back through the ``Inbox`` (log lines, started attempts,
outcomes) and wakes the loop, which writes it all in its next turn: attempt
threads never touch the database.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ferryman.domain.steps import StepSpec
from ferryman.infra.base import Infrastructure, OutputCapture, StepLaunch
from ferryman.infra.registry import InfraPool, check_step
from ferryman.infra.step_kinds import step_kind
from ferryman.redaction import SHAPES_ONLY, Masker
from ferryman.secret_resolvers.base import SecretChain, SecretResolver, SecretsError
from ferryman.store.tables import utcnow

log = logging.getLogger(__name__)


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
    deadline: float | None = None  # monotonic (the worker's clock)
    stop_reason: str | None = None  # "timeout" | "cancel" | "lease" | "shutdown"
    kill_sent: bool = False
    setup_error: str | None = None
    # set when this worker adopted the attempt from a lost worker (re-attach)
    reattach: bool = False
    logs_since: dt.datetime | None = None


@dataclass
class Outcome:
    """How an attempt ended."""

    attempt: Attempt
    ok: bool
    output: Any = None
    has_output: bool = False
    error: str = ""
    exit_code: int | None = None
    #: Why the failure is not retried (the step's ``retry_on`` …), or None.
    no_retry: str | None = None


@dataclass
class Buffers:
    """What the attempt threads handed over since the loop's last turn."""

    logs: list[dict[str, Any]] = field(default_factory=list)
    started: list[Attempt] = field(default_factory=list)
    done: list[Outcome] = field(default_factory=list)


class Inbox:
    """The buffers between the attempt threads and the loop, behind a lock."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self._wake = wake
        self._lock = threading.Lock()
        self._buf = Buffers()

    def take(self) -> Buffers:
        """Everything handed over so far (the loop writes it in this turn)."""
        with self._lock:
            buf, self._buf = self._buf, Buffers()
        return buf

    def put_back(self, buf: Buffers) -> None:
        """A turn failed: its buffers go first in the next one (nothing is lost)."""
        with self._lock:
            self._buf.logs[:0] = buf.logs
            self._buf.started[:0] = buf.started
            self._buf.done[:0] = buf.done

    def busy(self) -> bool:
        with self._lock:
            return bool(self._buf.done or self._buf.started or self._buf.logs)

    def log(self, rec: dict[str, Any]) -> None:
        with self._lock:
            first = not self._buf.logs
            self._buf.logs.append(rec)
        if first:  # later lines ride along with the first one's turn
            self._wake()

    def started(self, a: Attempt) -> None:
        with self._lock:
            self._buf.started.append(a)
        self._wake()

    def done(self, o: Outcome) -> None:
        with self._lock:
            self._buf.done.append(o)
        self._wake()


class Attempts:
    """The attempts in flight on this worker, the pool they run in and the
    threads that kill them."""

    def __init__(
        self,
        infra: InfraPool,
        concurrency: int,
        grace_seconds: float,
        wake: Callable[[], None],
        secrets: SecretResolver | None = None,
    ) -> None:
        self.infra = infra
        #: Resolves the secrets a step declares, when its attempt starts.
        self.secrets: SecretResolver = secrets or SecretChain([])
        self.concurrency = concurrency
        self.grace_seconds = grace_seconds
        self.inbox = Inbox(wake)
        self.inflight: dict[int, Attempt] = {}  # by node id; only the loop thread changes it
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="ferryman-step")
        self._killers = ThreadPoolExecutor(4, thread_name_prefix="ferryman-kill")

    @property
    def free(self) -> int:
        """Slots for more attempts."""
        return self.concurrency - len(self.inflight)

    def submit(self, a: Attempt) -> None:
        """Run ``a`` in the pool (after the turn that claimed it has committed)."""
        self.inflight[a.node_id] = a
        self._pool.submit(self._execute, a)

    def ended(self, a: Attempt) -> None:
        self.inflight.pop(a.node_id, None)

    def kill(self, a: Attempt, reason: str, grace: float) -> None:
        """Stop ``a`` for ``reason`` (its outcome says so), with ``grace`` seconds
        between the polite signal and the hard one."""
        if a.stop_reason is None:
            a.stop_reason = reason
        if a.identifier is None or a.kill_sent:
            return  # _run kills it as soon as it has started
        a.kill_sent = True
        self._killers.submit(_safe_kill, self.infra.get(a.kind), a.identifier, grace)

    def kill_all(self, reason: str) -> None:
        for a in list(self.inflight.values()):
            self.kill(a, reason, 0)

    def check_deadlines(self, mono: float) -> None:
        """Stop the attempts past their step's timeout."""
        for a in list(self.inflight.values()):
            if a.deadline is not None and mono >= a.deadline and a.stop_reason is None:
                self.kill(a, "timeout", self.grace_seconds)

    def next_deadline(self) -> float | None:
        """The earliest step timeout not acted on yet (monotonic)."""
        due = [
            a.deadline
            for a in list(self.inflight.values())
            if a.deadline is not None and not a.kill_sent
        ]
        return min(due) if due else None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._killers.shutdown(wait=False)
        self.infra.close()
        self.secrets.close()

    # -- in an attempt thread -----------------------------------------------------

    def _execute(self, a: Attempt) -> None:
        try:
            outcome = self._run(a)
        except Exception as exc:  # never lose an attempt to a bug in a backend
            log.exception("attempt %s/%s#%s crashed", a.run_id, a.name, a.attempt)
            outcome = Outcome(a, ok=False, error=f"internal error: {type(exc).__name__}: {exc}")
            # an exception's text may quote what it was given: the step's secrets too
            outcome.error = _mask_of(a)(outcome.error)
        self.inbox.done(outcome)

    def _run(self, a: Attempt) -> Outcome:
        if a.setup_error is not None or a.launch is None:
            return Outcome(a, ok=False, error=a.setup_error or "could not prepare the step")
        launch = a.launch
        if launch.step.secrets:
            # Resolved here, in the attempt's thread, outside any transaction:
            # a resolver may ask a remote source (Kubernetes, the database).
            try:
                launch.secrets = self.secrets.resolve(launch.step.secrets)
            except SecretsError as exc:
                if not a.reattach:
                    return Outcome(a, ok=False, error=f"secrets: {exc}")
                # The step runs already: follow it, masking token shapes only.
                log.warning("re-attaching %s#%s without its secrets: %s", a.name, a.attempt, exc)
        infra = self.infra.get(a.kind)
        capture = OutputCapture(
            launch.nonce,
            lambda s, line: self._log(a, s, line),
            launch.mask,
            max_output_bytes=launch.max_output_bytes,
        )
        if a.reattach and a.identifier is not None:
            ident = a.identifier
            if not _reattach(infra, a, ident, capture):
                return Outcome(
                    a,
                    ok=False,
                    error=f"worker lost, and its {a.kind} {ident} is gone: cannot re-attach",
                )
        else:
            try:
                check_step(type(infra), launch.step)
                ident = infra.start(launch, capture)
            except Exception as exc:
                # a backend's error may echo the env it was given: mask it
                error = launch.mask(f"could not start on {a.kind}: {exc}")
                return Outcome(a, ok=False, error=error)
            a.identifier = ident
        if infra.records_identifier and not a.reattach:
            self.inbox.started(a)
        if a.stop_reason is not None and not a.kill_sent:
            self.kill(a, a.stop_reason, self.grace_seconds)
        result = infra.watch(ident)
        outcome = self._outcome(a, result.status_code, capture, result.reason)
        outcome.error = launch.mask(outcome.error)  # errors are shown and stored: no secrets
        return outcome

    @staticmethod
    def _outcome(a: Attempt, code: int, capture: OutputCapture, reason: str | None) -> Outcome:
        if a.stop_reason == "timeout":
            return Outcome(a, False, error=f"timed out after {a.step.timeout:g}s", exit_code=code)
        if a.stop_reason == "cancel":
            return Outcome(a, False, error="cancelled", exit_code=code)
        if a.stop_reason == "shutdown":
            return Outcome(a, False, error="worker shut down before the step ended", exit_code=code)
        if a.stop_reason == "lease":
            return Outcome(a, False, error="lease lost", exit_code=code)
        r = step_kind(a.step.kind).read_result(a.step, code, capture, reason)
        return Outcome(
            a, r.ok, r.output, r.has_output, r.error, exit_code=code, no_retry=r.no_retry
        )

    def _log(self, a: Attempt, stream: str, line: str) -> None:
        self.inbox.log(
            {
                "run_id": a.run_id,
                "node": a.name,
                "attempt": a.attempt,
                "stream": stream,
                "line": line,
                "time": utcnow(),
            }
        )


def _mask_of(a: Attempt) -> Masker:
    """The masker of ``a``'s secrets (token shapes only before they are known)."""
    return a.launch.mask if a.launch is not None else SHAPES_ONLY


def _reattach(infra: Infrastructure, a: Attempt, ident: str, capture: OutputCapture) -> bool:
    try:
        alive = infra.attach(ident, capture, a.logs_since)
    except Exception as exc:
        log.warning("could not re-attach to %s %s: %s", a.kind, ident, exc)
        return False
    if alive:
        log.warning("re-attached to %s %s (%s#%s)", a.kind, ident, a.name, a.attempt)
    return alive


def _safe_kill(infra: Infrastructure, ident: str, grace: float) -> None:
    try:
        infra.kill(ident, grace)
    except Exception:
        log.exception("could not kill %s", ident)

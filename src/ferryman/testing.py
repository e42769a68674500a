"""Helpers for testing your pipelines: a fake infrastructure and a one-call runner.

``FakeInfrastructure`` is an infrastructure that runs no process and no
container. A python step runs its function in this process (as ``inline``
does), unless the test scripted its outcome; any step's outcome can be
scripted by step name (``FakeOutcome``: exit code, output lines, result value,
a delay, or hanging until killed, per attempt). It records what it was asked
(``launches``, ``kills``, ``previews``, ``attaches``) and, like the container
infrastructures, can be killed from any instance and re-attached to after a
lost worker (``close()`` plays the lost worker). It passes the infrastructure
contract suite (``tests/contract``).

``run_pipeline`` runs one pipeline to its end on a temporary SQLite home with
the real services and worker, every step on the given infrastructure (a
``FakeInfrastructure`` by default), and returns the states, outputs, errors
and logs::

    from ferryman.testing import FakeInfrastructure, FakeOutcome, run_pipeline

    fake = FakeInfrastructure(outcomes={"load": FakeOutcome(value=[1, 2, 3])})
    result = run_pipeline("pipelines/etl.py", {"day": "2024-05-01"}, infrastructure=fake)
    assert result.state == "succeeded"
    assert result.outputs["total"] == 6

To use the fake with a worker of your own, hand it to the worker's pool:
``Worker(store, settings, infra=InfraPool(instances={"fake": fake}))`` and
start runs with ``RunOptions(infrastructure="fake")``. It is deliberately not
an installed infrastructure: no deployment can send steps to it by accident.

Importing this module is light (no SQLAlchemy, no store, no services): those
are imported when ``run_pipeline`` is called. The guide is docs/testing.md.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import tempfile
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from ferryman.infra.base import (
    EXIT_KILLED,
    EXIT_LOST,
    MASK,
    RESULT_MARKER,
    InfraConfig,
    Infrastructure,
    LogSink,
    Result,
    StepLaunch,
)
from ferryman.infra.inline import InlineConfig, InlineInfrastructure
from ferryman.infra.step_kinds import step_kind
from ferryman.runtime.loader import type_name
from ferryman.secret_resolvers.base import SecretResolver, SecretSourceFailed

if TYPE_CHECKING:
    from ferryman.domain.spec import PipelineSpec
    from ferryman.dsl.decorators import Pipeline
    from ferryman.infra.registry import InfraPool
    from ferryman.settings import Settings
    from ferryman.store.engine import Store

__all__ = [
    "FakeConfig",
    "FakeInfrastructure",
    "FakeKill",
    "FakeOutcome",
    "FakeSecretResolver",
    "PipelineResult",
    "run_pipeline",
]

log = logging.getLogger(__name__)

#: How often a waiting ``watch`` checks whether its instance was closed.
_POLL = 0.05
#: Lines this much older than ``attach``'s ``since`` are replayed too: the
#: lost worker stamped a line when it stored it, a little after it was written.
_REPLAY_MARGIN = dt.timedelta(seconds=1)


class FakeSecretResolver(SecretResolver):
    """A secret resolver holding the values it was given, for tests.

    It records every lookup (``lookups``: the names asked for, in order), and
    ``fail`` makes every lookup fail as an unreachable source would. It passes
    the secret resolver contract suite (``tests/contract``). Give it to
    ``run_pipeline(..., secrets=...)`` or to a ``Worker(..., secrets=...)``.
    """

    kind = "fake"

    def __init__(self, values: Mapping[str, str] | None = None, *, fail: bool = False) -> None:
        self.values = dict(values or {})
        self.fail = fail
        self.lookups: list[list[str]] = []

    def lookup(self, names: Sequence[str]) -> dict[str, str]:
        self.lookups.append(list(names))
        if self.fail:
            raise SecretSourceFailed("the fake secret source is down")
        return {n: self.values[n] for n in names if n in self.values}


class FakeOutcome(BaseModel):
    """How one attempt of a step ends on the fake infrastructure.

    Lines are written first (``stdout``, then ``stderr``), then the attempt
    waits ``delay`` seconds (or, with ``hang``, until it is killed), then it
    ends with ``exit_code``. A python step also writes its result line:
    ``value`` as its output when ``exit_code`` is 0, else a failure with
    ``error`` (default ``exit code N``), raised as ``raises`` (an exception
    class, or its dotted name) when given, so that the step's
    ``retry_on``/``no_retry_on`` decide on it as on a real exception. Other
    kinds of step have no output.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    exit_code: int = 0
    value: Any = None
    error: str | None = None
    raises: type[BaseException] | str | None = None
    stdout: list[str] = Field(default_factory=list)
    stderr: list[str] = Field(default_factory=list)
    delay: float = Field(default=0.0, ge=0)
    hang: bool = False


class FakeConfig(InfraConfig):
    """Configuration of the fake infrastructure."""

    outcomes: dict[str, FakeOutcome | list[FakeOutcome]] = Field(default_factory=dict)
    """Step name → its outcome, or one outcome per attempt (the last one repeats).
    A python step without one runs its function; any other step exits 0."""
    max_workers: int = Field(default=32, ge=1)
    """Python functions that may run at once (threads)."""


@dataclass(frozen=True)
class FakeKill:
    """One call of ``kill``: which attempt (its step, when known) and the grace."""

    identifier: str
    step: str | None
    grace_seconds: float | None


@dataclass(eq=False)
class _Attempt:
    """One attempt, shared by every instance of this process (as a container is
    by every worker of a Docker host)."""

    identifier: str
    node: str
    sink: LogSink | None
    owner: FakeInfrastructure | None
    lines: list[tuple[dt.datetime, str, str]] = field(default_factory=list)
    lock: threading.RLock = field(default_factory=threading.RLock)
    stop: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    code: int = EXIT_LOST
    reason: str | None = None
    inline: tuple[InlineInfrastructure, str] | None = None

    def emit(self, stream: str, line: str) -> None:
        """Keep the line (for a later ``attach``) and pass it to the current sink."""
        with self.lock:
            if self.done.is_set():
                return
            self.lines.append((dt.datetime.now(dt.UTC), stream, line))
            sink = self.sink
            if sink is not None:
                _deliver(sink, stream, line, self.identifier)

    def finish(self, code: int, reason: str | None) -> None:
        with self.lock:
            if not self.done.is_set():
                self.code, self.reason = code, reason
                self.done.set()


_attempts: dict[str, _Attempt] = {}
_attempts_lock = threading.Lock()


def _lookup(identifier: str) -> _Attempt | None:
    with _attempts_lock:
        return _attempts.get(identifier)


def _deliver(sink: LogSink, stream: str, line: str, identifier: str) -> None:
    try:
        sink(stream, line)
    except Exception:  # a broken sink must not break the step
        log.exception("log sink failed for %s (%s)", identifier, stream)


class FakeInfrastructure(Infrastructure):
    """An infrastructure for tests: scripted outcomes, python functions run in
    this process, and a record of every call (see the module's docs)."""

    kind = "fake"
    config_model = FakeConfig
    config: FakeConfig
    kinds = frozenset({"python", "container"})
    #: Identifiers mean something to every instance of this process, so the
    #: worker stores them; ``attach`` resumes an attempt a closed instance began.
    records_identifier = True
    reattachable = True
    #: Functions run in threads: kill abandons them, env is not applied (as inline).
    kill_signals = False
    applies_env = False

    #: Reason of the result of a scripted attempt that was killed.
    KILLED: ClassVar[str] = "killed: stopped by the fake infrastructure"

    def __init__(
        self,
        config: FakeConfig | None = None,
        *,
        outcomes: Mapping[str, FakeOutcome | Sequence[FakeOutcome]] | None = None,
    ) -> None:
        if outcomes is not None:
            base = config or FakeConfig()
            merged: dict[str, Any] = dict(base.outcomes)
            for name, given in outcomes.items():
                one = isinstance(given, FakeOutcome | Mapping)
                merged[name] = given if one else list(given)
            # validated: a mistyped outcome fails here, not in the middle of a run
            config = FakeConfig.model_validate({**base.model_dump(), "outcomes": merged})
        super().__init__(config)
        self.launches: list[StepLaunch] = []
        self.kills: list[FakeKill] = []
        self.previews: list[StepLaunch] = []
        self.attaches: list[str] = []
        self._lock = threading.Lock()
        self._generation = 0
        self._inline: InlineInfrastructure | None = None

    # -- what the test asks --------------------------------------------------------

    def outcome_for(self, step: str, attempt: int) -> FakeOutcome | None:
        """The scripted outcome of ``attempt`` (1-based) of ``step``, if any."""
        given = self.config.outcomes.get(step)
        if given is None or isinstance(given, FakeOutcome):
            return given
        return given[min(attempt, len(given)) - 1] if given else None

    def launches_of(self, step: str) -> list[StepLaunch]:
        """The attempts of ``step`` this instance started, in order."""
        with self._lock:
            return [la for la in self.launches if la.node == step]

    # -- Infrastructure --------------------------------------------------------------

    def start(self, launch: StepLaunch, sink: LogSink) -> str:
        identifier = f"fake:{uuid.uuid4().hex}"
        attempt = _Attempt(identifier, launch.node, sink, self)
        with _attempts_lock:
            _attempts[identifier] = attempt
        with self._lock:
            self.launches.append(launch)
        outcome = self.outcome_for(launch.node, launch.attempt)
        thread = threading.Thread(
            target=self._act, args=(attempt, outcome, launch), name=f"ferryman-fake-{launch.node}"
        )
        thread.daemon = True
        thread.start()
        return identifier

    def watch(self, identifier: str) -> Result:
        attempt = _lookup(identifier)
        if attempt is None:
            return Result(
                EXIT_LOST, identifier, reason="unknown fake step (never started, or already ended)"
            )
        generation = self._generation
        while not attempt.done.wait(_POLL):
            if self._generation != generation:
                return Result(
                    EXIT_LOST,
                    identifier,
                    reason="the fake infrastructure was closed while watching (the step runs on)",
                )
        with _attempts_lock:
            _attempts.pop(identifier, None)  # as a container removed once its end is collected
        return Result(attempt.code, identifier, reason=attempt.reason)

    def kill(self, identifier: str, grace_seconds: float | None = None) -> None:
        """Stop the attempt at once (the grace is recorded, not waited for).

        A python function running in a thread cannot be stopped: it is
        abandoned, as on ``inline``. Idempotent; unknown or ended attempts
        are left alone."""
        attempt = _lookup(identifier)
        step = attempt.node if attempt else None
        with self._lock:
            self.kills.append(FakeKill(identifier, step, grace_seconds))
        if attempt is None or attempt.done.is_set():
            return
        attempt.stop.set()
        if attempt.inline is not None:
            inline, inline_id = attempt.inline
            inline.kill(inline_id, grace_seconds or 0.0)

    def attach(self, identifier: str, sink: LogSink, since: dt.datetime | None = None) -> bool:
        """Follow an attempt another (closed) instance started: lines from
        ``since`` (a second earlier, to lose none) are replayed, and its result
        line whenever it was written. False when the attempt is unknown or was
        already watched to its end."""
        attempt = _lookup(identifier)
        if attempt is None:
            return False
        if since is not None and since.tzinfo is None:
            since = since.replace(tzinfo=dt.UTC)
        start = None if since is None else since - _REPLAY_MARGIN
        with attempt.lock:
            for when, stream, line in attempt.lines:
                replay = start is None or when >= start
                if replay or (stream == "stdout" and line.startswith(RESULT_MARKER)):
                    _deliver(sink, stream, line, identifier)
            attempt.sink, attempt.owner = sink, self
        with self._lock:
            self.attaches.append(identifier)
        return True

    def preview(self, launch: StepLaunch) -> dict[str, Any]:
        with self._lock:
            self.previews.append(launch)
        outcome = self.outcome_for(launch.node, launch.attempt)
        runs_function = outcome is None and step_kind(launch.step.kind).needs_payload
        if outcome is not None:
            runs = "a scripted outcome"
        elif runs_function:
            runs = "the function, in this process"
        else:
            runs = "nothing (exits 0)"
        env: dict[str, str | None] = {k: v for k, v in launch.env.items()}
        env.update({k: MASK for k in launch.secrets})
        shown: dict[str, Any] = _mask_deep(
            {
                "kind": self.kind,
                "step": launch.node,
                "step_kind": launch.step.kind,
                "attempt": launch.attempt,
                "runs": runs,
                "outcome": outcome.model_dump(mode="json") if outcome else None,
                "function": launch.payload()["function"] if runs_function else None,
                "inputs": launch.inputs,
                "env": env,
            },
            launch.mask,
        )
        return shown

    def close(self) -> None:
        """Play a lost worker: stop streaming the attempts this instance
        follows and end its waiting ``watch`` calls; the attempts run on, and
        another instance can ``attach`` to them. The instance stays usable."""
        with self._lock:
            self._generation += 1
        with _attempts_lock:
            mine = [a for a in _attempts.values() if a.owner is self]
        for attempt in mine:
            with attempt.lock:
                if attempt.owner is self:
                    attempt.sink, attempt.owner = None, None

    # -- running an attempt (its own thread) ---------------------------------------------

    def _act(self, attempt: _Attempt, outcome: FakeOutcome | None, launch: StepLaunch) -> None:
        if outcome is None and step_kind(launch.step.kind).needs_payload:
            self._run_function(attempt, launch)
        else:
            _play(attempt, outcome or FakeOutcome(), launch)

    def _run_function(self, attempt: _Attempt, launch: StepLaunch) -> None:
        with self._lock:
            if self._inline is None:
                config = InlineConfig(max_workers=self.config.max_workers)
                self._inline = InlineInfrastructure(config)
            inline = self._inline
        inline_id = inline.start(launch, attempt.emit)
        attempt.inline = (inline, inline_id)
        if attempt.stop.is_set():  # killed while it was being started
            inline.kill(inline_id, 0.0)
        result = inline.watch(inline_id)
        attempt.finish(result.status_code, result.reason)


def _play(attempt: _Attempt, outcome: FakeOutcome, launch: StepLaunch) -> None:
    """Act out a scripted outcome (in the attempt's own thread)."""
    for line in outcome.stdout:
        attempt.emit("stdout", line)
    for line in outcome.stderr:
        attempt.emit("stderr", line)
    if outcome.hang:
        attempt.stop.wait()
    elif outcome.delay:
        attempt.stop.wait(outcome.delay)
    if attempt.stop.is_set():
        attempt.finish(EXIT_KILLED, FakeInfrastructure.KILLED)
        return
    if step_kind(launch.step.kind).needs_payload:
        if outcome.exit_code == 0:
            body = {"ok": True, "value": outcome.value}
        else:
            error = outcome.error or f"exit code {outcome.exit_code}"
            body = {"ok": False, "error": error, "kind": "exception", **_raised(outcome.raises)}
        attempt.emit("stdout", f"{RESULT_MARKER}{launch.nonce} {json.dumps(body)}")
    attempt.finish(outcome.exit_code, None)


def _raised(raises: type[BaseException] | str | None) -> dict[str, Any]:
    """The ``type`` and ``mro`` of a scripted exception (runtime's names)."""
    if raises is None:
        return {}
    if isinstance(raises, str):
        return {"type": raises, "mro": [raises]}
    mro = [type_name(c) for c in raises.__mro__ if c is not object]
    return {"type": mro[0], "mro": mro}


def _mask_deep(value: Any, mask: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {k: _mask_deep(v, mask) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_deep(v, mask) for v in value]
    return value


# -- running a whole pipeline ----------------------------------------------------------


@dataclass(frozen=True)
class PipelineResult:
    """How a run ended, as ``run_pipeline`` returns it."""

    run_id: str
    #: The run's final state: ``succeeded``, ``failed`` or ``cancelled``.
    state: str
    #: Step name → its final state.
    steps: dict[str, str]
    #: Step name → its output, for the steps that produced one.
    outputs: dict[str, Any]
    #: Step name → its error, for the steps that failed.
    errors: dict[str, str]
    #: Step name → its attempts' output lines (stdout and stderr), in order.
    logs: dict[str, list[str]]
    #: Step name → how many attempts it took.
    attempts: dict[str, int]

    @property
    def succeeded(self) -> bool:
        """Whether the run succeeded."""
        return self.state == "succeeded"


def run_pipeline(
    pipeline: PipelineSpec | Pipeline | str,
    params: Mapping[str, Any] | None = None,
    *,
    infrastructure: Infrastructure | None = None,
    home: str | Path | None = None,
    namespace: str = "default",
    labels: Mapping[str, str] | None = None,
    timeout: float = 60.0,
    secrets: SecretResolver | Mapping[str, str] | None = None,
) -> PipelineResult:
    """Run ``pipeline`` to its end and return how it ended.

    ``pipeline`` is a ``@pipeline`` function, a ``PipelineSpec`` or a
    reference as ``ferryman run`` takes it (``file.py[:name]``,
    ``file.yaml``, ``package.module:name``). Every step runs on
    ``infrastructure`` (default: a new ``FakeInfrastructure``), whatever the
    pipeline declares. The run lives in a SQLite database under ``home``
    (default: a temporary directory, removed afterwards), registered,
    started and executed by the same services and worker as ``ferryman run``.
    Parameters are validated as there (``ParamsInvalid``); ``TimeoutError``
    when the run has not ended after ``timeout`` seconds. A step's
    secrets come from ``secrets``: a resolver, or a mapping of names to
    values (a ``FakeSecretResolver``); by default from this process's
    environment.
    """
    infra = infrastructure if infrastructure is not None else FakeInfrastructure()
    if secrets is None:
        from ferryman.secret_resolvers.environment import EnvironmentResolver

        resolver: SecretResolver = EnvironmentResolver()
    elif isinstance(secrets, SecretResolver):
        resolver = secrets
    else:
        resolver = FakeSecretResolver(secrets)
    args = (pipeline, params, infra, namespace, labels, timeout, resolver)
    if home is not None:
        return _run_in(Path(home), *args)
    with tempfile.TemporaryDirectory(prefix="ferryman-test-", ignore_cleanup_errors=True) as tmp:
        return _run_in(Path(tmp), *args)


def _run_in(
    home: Path,
    pipeline: PipelineSpec | Pipeline | str,
    params: Mapping[str, Any] | None,
    infra: Infrastructure,
    namespace: str,
    labels: Mapping[str, str] | None,
    timeout: float,
    secrets: SecretResolver,
) -> PipelineResult:
    from ferryman.domain.options import RunOptions
    from ferryman.infra.registry import InfraPool
    from ferryman.services.catalog import register
    from ferryman.services.runs import RunService
    from ferryman.settings import Settings
    from ferryman.store.engine import Store

    spec = _spec_of(pipeline)
    home.mkdir(parents=True, exist_ok=True)
    settings = Settings(home=home, database_url=f"sqlite:///{home / 'ferryman.db'}")
    store = Store.from_settings(settings)
    try:
        with store.write() as conn:
            version = register(conn, namespace, spec)
        service = RunService(store, trigger_max_depth=settings.worker.trigger_max_depth)
        started = service.start_version(
            version,
            dict(params or {}),
            options=RunOptions(infrastructure=infra.kind),
            labels=labels,
        )
        pool = InfraPool(instances={infra.kind: infra})
        _drain(store, settings, pool, started.id, timeout, secrets)
        return _result_of(store, started.id)
    finally:
        store.dispose()


def _spec_of(pipeline: PipelineSpec | Pipeline | str) -> PipelineSpec:
    from ferryman.domain.spec import PipelineSpec
    from ferryman.dsl.decorators import Pipeline
    from ferryman.dsl.loader import load_pipeline

    if isinstance(pipeline, PipelineSpec):
        return pipeline
    if isinstance(pipeline, Pipeline):
        return pipeline.spec()
    if isinstance(pipeline, str):
        return load_pipeline(pipeline)
    raise TypeError(f"not a pipeline: {pipeline!r} (a @pipeline, a PipelineSpec or a reference)")


def _drain(
    store: Store,
    settings: Settings,
    pool: InfraPool,
    run_id: str,
    timeout: float,
    secrets: SecretResolver,
) -> None:
    """Execute ``run_id`` to its end on a worker of this process.

    The only place this module drives the worker."""
    from ferryman.engine.worker import Worker

    worker = Worker(store, settings, only_runs={run_id}, infra=pool, secrets=secrets)
    worker.run_until({run_id}, timeout=timeout)


def _result_of(store: Store, run_id: str) -> PipelineResult:
    from ferryman.services.queries import get_logs, get_run, run_outputs

    with store.read() as conn:
        run = get_run(conn, run_id)
        outputs = run_outputs(conn, run_id)
        lines: dict[str, list[str]] = {n["name"]: [] for n in run["nodes"]}
        after = 0
        while True:
            page = get_logs(conn, run_id, after_id=after, limit=1000)
            for rec in page:
                lines.setdefault(rec["node"], []).append(rec["line"])
            if len(page) < 1000:
                break
            after = page[-1]["id"]
    nodes = run["nodes"]
    return PipelineResult(
        run_id=run_id,
        state=str(run["state"]),
        steps={n["name"]: str(n["state"]) for n in nodes},
        outputs=outputs,
        errors={n["name"]: str(n["error"]) for n in nodes if n["state"] == "failed"},
        logs=lines,
        attempts={n["name"]: int(n["attempt"]) for n in nodes},
    )

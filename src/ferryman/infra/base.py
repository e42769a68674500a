"""The infrastructure interface (SPEC §7): where a step runs.

An infrastructure *starts* a step and reports its identifier as soon as the
thing exists (so it can be stored and killed from anywhere), *watches* it to
the end, *kills* it (graceful, then forced) and *previews* exactly what it
would launch with secret values masked.

Timeouts and cancellation are owned by the worker: it calls ``kill`` from
another thread while ``watch`` is blocked; ``watch`` then returns the exit
status of the killed thing.

Python steps return their value through the log stream: the runtime entry
point prints one line ``RESULT_MARKER + nonce + " " + json`` as its last line
of stdout; ``StepLaunch.sink`` callers strip it (see ``OutputCapture``). This
works the same for a local process, a container or a Kubernetes pod.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import functools
import json
import os
import re
import sys
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from ferryman.domain.spec import STEP_MODELS, PythonStep, StepSpec
from ferryman.redaction import MASK as MASK
from ferryman.redaction import Redactor
from ferryman.runtime.loader import OK_ENVELOPE

RESULT_MARKER = "\x1eferryman-result "
PAYLOAD_ENV = "FERRYMAN_STEP_PAYLOAD"
#: ferryman's own names: no variable of this prefix reaches a step but the
#: step's own (``StepLaunch.ferryman_env`` and an infrastructure's plumbing).
RESERVED_PREFIX = "FERRYMAN_"
#: What a step started as a local process keeps of the worker's environment
#: (names or globs): what a program needs to run, nothing that configures
#: ferryman or holds its secrets. More with ``FERRYMAN_STEP_ENV_PASSTHROUGH``.
STEP_ENV_ALLOW: tuple[str, ...] = (
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "LC_*", "TZ",
    "TMPDIR", "TEMP", "TMP", "PYTHONPATH", "PYTHONHOME", "PYTHONIOENCODING", "PYTHONUTF8",
    "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "VIRTUAL_ENV", "LD_LIBRARY_PATH",
    "SSL_CERT_FILE", "SSL_CERT_DIR",
)  # fmt: skip
#: The variable naming more of the worker's variables to pass to steps
#: (comma-separated names or globs; ``Settings.step_env_passthrough``).
PASSTHROUGH_ENV = "FERRYMAN_STEP_ENV_PASSTHROUGH"

#: The key of ``Infrastructure.bind``'s context holding the durable state of
#: the ``task`` infrastructure (``ferryman.plugins.state.TaskState``).
TASK_STATE = "task_state"

# exit codes reported by watch() for things ferryman itself ended
EXIT_KILLED = -9
EXIT_LOST = -1

LogSink = Callable[[str, str], None]
"""``sink(stream, line)``: receives each output line ("stdout" or "stderr")."""


@dataclass
class StepLaunch:
    """Everything an infrastructure needs to launch one attempt of one step."""

    run_id: str
    node: str
    attempt: int
    pipeline: str
    namespace: str
    step: StepSpec
    inputs: dict[str, Any]
    params: dict[str, Any]
    nonce: str
    env: dict[str, str | None] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)
    #: The largest output (its JSON, in bytes) the step may return; None: no limit.
    max_output_bytes: int | None = None

    def payload(self) -> dict[str, Any]:
        """What the runtime entry point needs (never contains secret values).

        Only steps whose kind ``needs_payload`` (python) read it; for others
        ``function`` is ``None``."""
        fn = self.step.function if isinstance(self.step, PythonStep) else None
        return {
            "function": fn.model_dump() if fn else None,
            "inputs": self.inputs,
            "nonce": self.nonce,
            "sys_path": [os.getcwd()],
            "run_id": self.run_id,
            "node": self.node,
            "attempt": self.attempt,
            **({"max_output_bytes": self.max_output_bytes} if self.max_output_bytes else {}),
        }

    def payload_json(self) -> str:
        return json.dumps(self.payload(), separators=(",", ":"))

    def ferryman_env(self) -> dict[str, str]:
        """The step's own ``FERRYMAN_*`` variables: run, step, attempt,
        pipeline, namespace and the payload."""
        return {
            "FERRYMAN_RUN_ID": self.run_id,
            "FERRYMAN_STEP": self.node,
            "FERRYMAN_ATTEMPT": str(self.attempt),
            "FERRYMAN_PIPELINE": self.pipeline,
            "FERRYMAN_NAMESPACE": self.namespace,
            PAYLOAD_ENV: self.payload_json(),
        }

    def full_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The step's environment: ``base`` (default: the worker's variables
        that ``step_environment`` lets through, never all of them) + the
        step's own ``FERRYMAN_*`` variables + its env and secrets (``None``
        unsets). No other ``FERRYMAN_*`` variable is kept, from any layer."""
        env = step_environment() if base is None else without_reserved(base)
        env.update(self.ferryman_env())
        for k, v in {**self.env, **self.secrets}.items():
            if k.startswith(RESERVED_PREFIX):
                continue
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        return env

    @functools.cached_property
    def mask(self) -> Redactor:
        """Masks this step's secret values (and token shapes) in a text:
        ``launch.mask(text)``; see ``ferryman.redaction``."""
        return Redactor.of(self.secrets.values())


@dataclass
class Result:
    """What ``watch`` returns: the exit status and the identifier."""

    status_code: int
    identifier: str
    reason: str | None = None


class InfraConfig(BaseModel):
    """Base of every infrastructure's config model."""

    model_config = ConfigDict(extra="forbid")


class Infrastructure(ABC):
    """One place steps can run. Subclasses set ``kind``, ``config_model`` and
    ``kinds``, and the capabilities below when they differ from the default."""

    kind: ClassVar[str]
    config_model: ClassVar[type[InfraConfig]] = InfraConfig
    #: The step kinds (``StepSpec.kind``) this infrastructure runs. ``start`` and
    #: ``preview`` are only called with steps of these kinds: the worker, the
    #: preview and ``ferryman deploy`` refuse others (``registry.check_step``).
    #: The default, every kind, keeps infrastructures written before kinds were
    #: declared working as they did (they checked kinds themselves in ``start``).
    kinds: ClassVar[frozenset[str]] = frozenset(STEP_MODELS)
    #: True when an identifier means something outside this worker process, so
    #: the worker records it in the database: any worker can then kill the
    #: attempt, and (with ``reattachable``) adopt it. False for things that live
    #: only in this process, such as the threads of ``inline``.
    records_identifier: ClassVar[bool] = True

    def __init__(self, config: InfraConfig | None = None) -> None:
        self.config = config or self.config_model()

    @abstractmethod
    def start(self, launch: StepLaunch, sink: LogSink) -> str:
        """Launch the attempt; return its identifier as soon as it exists.

        Output lines are passed to ``sink`` as they arrive (possibly from a
        background thread) until the thing ends. An infrastructure may begin
        following them only once ``watch`` is called (``kubernetes`` then
        reads the pod's log from its first line): none is lost either way,
        and the worker watches right after ``start``.
        """

    @abstractmethod
    def watch(self, identifier: str) -> Result:
        """Block until the attempt ends; return its exit status.

        Must not time out by itself: a long healthy step is not an error.
        """

    @abstractmethod
    def kill(self, identifier: str, grace_seconds: float) -> None:
        """Stop the attempt: ask politely, and force it after ``grace_seconds``."""

    #: True when ``attach`` can resume watching a thing a lost worker started.
    reattachable: ClassVar[bool] = False
    #: True when ``kill`` asks the step's code to stop (SIGTERM) and forces it
    #: (SIGKILL) after the grace period. False when it can only abandon the
    #: attempt: ``watch`` returns at once and later output is dropped, but the
    #: code runs on (``inline``: a thread cannot be stopped).
    kill_signals: ClassVar[bool] = True
    #: True when stdout and stderr reach the sink as two streams, each in
    #: order. False when the platform keeps one log and every line arrives as
    #: "stdout", in the order written (``kubernetes``: a pod's log).
    separates_streams: ClassVar[bool] = True
    #: True when the step's ``env`` and secrets are set in the environment its
    #: code runs in. False for ``inline``: threads share the worker's
    #: environment (its secrets still mask the output).
    applies_env: ClassVar[bool] = True

    def attach(self, identifier: str, sink: LogSink, since: dt.datetime | None = None) -> bool:
        """Resume streaming the output of an attempt that a lost worker started.

        ``since``: the time of the last line already stored for the attempt
        (``None``: none stored); lines from then on are streamed again (a few
        may repeat; none may be lost, since a python step's result line can be
        among them). Returns False when the thing no longer exists (the caller
        treats the attempt as lost). After a True return, ``watch(identifier)``
        works as if this instance had started it. Only called when
        ``reattachable``.
        """
        raise NotImplementedError(f"{self.kind} cannot re-attach")

    @abstractmethod
    def preview(self, launch: StepLaunch) -> dict[str, Any]:
        """Exactly what would be launched, with secret values masked."""

    def bind(self, context: Mapping[str, Any]) -> None:  # noqa: B027 - optional hook
        """Take what the worker shares with its infrastructures (optional):
        ``InfraPool(context=...)`` passes it to each instance it makes. The
        ``task`` infrastructure takes its durable state (``"task_state"``)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources held by the infrastructure (optional)."""


class OutputCapture:
    """Wraps a sink: strips the runtime's result line and keeps its value;
    masks secrets in every other line (``mask``: the launch's ``Redactor``,
    which also recognises a secret split over two lines and PEM blocks; any
    other text masker is applied line by line)."""

    def __init__(
        self,
        nonce: str,
        sink: LogSink,
        mask: Callable[[str], str],
        max_output_bytes: int | None = None,
    ) -> None:
        self._prefix = RESULT_MARKER + nonce + " "
        #: The output limit: a result line past it (a runtime that does not
        #: check it itself) is dropped, not kept, parsed or stored.
        self.max_output_bytes = max_output_bytes
        #: The length of the output of such a line (None: none was dropped).
        self.result_too_large: int | None = None
        self._sink = sink
        self.redactor = mask if isinstance(mask, Redactor) else None
        # One masker per stream: each is fed by one reader thread, in order.
        self._maskers: dict[str, Callable[[str], str]] = (
            {"stdout": mask.lines(), "stderr": mask.lines()} if isinstance(mask, Redactor) else {}
        )
        self._mask = mask
        self._lock = threading.Lock()
        self.has_result = False
        self.result_json: str | None = None

    def __call__(self, stream: str, line: str) -> None:
        if stream == "stdout" and line.startswith(self._prefix):
            size = len(line) - len(self._prefix)
            limit = self.max_output_bytes
            with self._lock:
                self.has_result = True
                if limit is not None and size - OK_ENVELOPE > limit:
                    self.result_json, self.result_too_large = None, size - OK_ENVELOPE
                else:
                    self.result_json = line[len(self._prefix) :]
            return
        self._sink(stream, self._maskers.get(stream, self._mask)(line))

    def redact_value(self, value: Any) -> Any:
        """A step's output (any JSON value) with secrets masked in every string."""
        if self.redactor is not None:
            return self.redactor.value(value)
        return _mask_strings(value, self._mask)


def _mask_strings(value: Any, mask: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {k: _mask_strings(v, mask) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask_strings(v, mask) for v in value]
    return value


def without_reserved(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without ferryman's own (``FERRYMAN_*``) variables."""
    return {k: v for k, v in env.items() if not k.startswith(RESERVED_PREFIX)}


@functools.lru_cache(maxsize=8)
def _allowed(passthrough: str) -> re.Pattern[str]:
    extra = [p.strip() for p in passthrough.split(",") if p.strip()]
    return re.compile("|".join(fnmatch.translate(p) for p in (*STEP_ENV_ALLOW, *extra)))


def step_environment(
    environ: Mapping[str, str] | None = None, passthrough: Iterable[str] | str | None = None
) -> dict[str, str]:
    """What a step run as a local process gets of the worker's environment
    (``environ``, default ``os.environ``): the variables named by
    ``STEP_ENV_ALLOW`` and by ``passthrough`` (names or globs; default:
    ``FERRYMAN_STEP_ENV_PASSTHROUGH`` of ``environ``), never a ``FERRYMAN_*``
    one. ferryman's settings and secrets stay with ferryman."""
    environ = os.environ if environ is None else environ
    if passthrough is None:
        passthrough = environ.get(PASSTHROUGH_ENV, "")
    if not isinstance(passthrough, str):
        passthrough = ",".join(passthrough)
    allowed = _allowed(passthrough).match
    return {k: v for k, v in environ.items() if not k.startswith(RESERVED_PREFIX) and allowed(k)}


def python_command() -> list[str]:
    """The command line that runs the runtime entry point on this interpreter."""
    return [sys.executable, "-m", "ferryman.runtime"]

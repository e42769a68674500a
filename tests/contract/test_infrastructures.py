"""The contract every infrastructure passes (``backend``: see backends.py).

The interface is ``ferryman.infra.base.Infrastructure``. Where
infrastructures legitimately differ, the case reads the capability the
infrastructure declares (``kinds``, ``records_identifier``,
``reattachable``, ``kill_signals``, ``separates_streams``, ``applies_env``)
rather than its name. Unknown identifiers are the same everywhere: ``kill``
is a no-op, ``watch`` answers at once with ``EXIT_LOST`` and a reason,
``attach`` returns False (or raises ``NotImplementedError`` where it is not
``reattachable``).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from typing import Any

import pytest
from tests.contract.backends import FAILING_CODES, KIND_LINE, Backend, Gate, Lines, wait_until

from ferryman.infra.base import (
    EXIT_LOST,
    MASK,
    RESULT_MARKER,
    InfraConfig,
    OutputCapture,
    Result,
    StepLaunch,
)
from ferryman.infra.registry import UnsupportedStepKind, check_step, runners_of
from ferryman.infra.step_kinds import STEP_KINDS, StepResult, step_kind

pytestmark = pytest.mark.timeout(180)

SECRET = "s3cr3t-hunter2-value"

#: Prints "ready", waits for its gate, prints "released" and returns "released".
BLOCKING = """
import os, time

def step(gate):
    print("ready", flush=True)
    while not os.path.exists(gate):
        time.sleep(0.02)
    print("released", flush=True)
    return "released"
"""


class Started:
    """One attempt started on an instance, with its sink and capture."""

    def __init__(self, backend: Backend, launch: StepLaunch, infra: Any = None) -> None:
        self.launch = launch
        self.infra = infra or backend.infra
        self.lines = Lines()
        self.capture = OutputCapture(launch.nonce, self.lines, launch.mask)
        self.identifier = self.infra.start(launch, self.capture)
        self._box: dict[str, Any] = {}
        self._watcher: threading.Thread | None = None

    def watch(self) -> Result:
        result: Result = self.infra.watch(self.identifier)
        assert result.identifier == self.identifier
        return result

    def watch_in_background(self) -> None:
        """``watch`` in a thread (as the worker does while it may ``kill``)."""

        def run() -> None:
            try:
                self._box["result"] = self.watch()
            except BaseException as exc:  # shown by ``result``
                self._box["error"] = exc

        self._watcher = threading.Thread(target=run, daemon=True)
        self._watcher.start()

    def running(self) -> bool:
        """Whether the background ``watch`` is still waiting."""
        return self._watcher is not None and self._watcher.is_alive()

    def result(self, timeout: float = 90.0) -> Result:
        assert self._watcher is not None
        self._watcher.join(timeout)
        assert not self._watcher.is_alive(), f"watch did not return within {timeout}s"
        assert "error" not in self._box, self._box["error"]
        result: Result = self._box["result"]
        return result

    def read(self, result: Result) -> StepResult:
        """The outcome as the step's kind reads it (as the worker does)."""
        step = self.launch.step
        kind = step_kind(step.kind)
        return kind.read_result(step, result.status_code, self.capture, result.reason)


def run(backend: Backend, launch: StepLaunch) -> tuple[Started, Result]:
    started = Started(backend, launch)
    return started, started.watch()


def error_lines(backend: Backend, lines: Lines) -> list[str]:
    """The stream a step's stderr arrives on: its own, or the one merged log."""
    return lines.stream("stderr" if backend.infra.separates_streams else "stdout")


# -- declarations ---------------------------------------------------------------------


def test_declares_what_it_is_and_can_do(backend: Backend) -> None:
    cls = type(backend.infra)
    assert isinstance(cls.kind, str) and cls.kind
    assert issubclass(cls.config_model, InfraConfig)
    assert isinstance(backend.infra.config, cls.config_model)
    assert cls.kinds and cls.kinds <= set(STEP_KINDS), cls.kinds
    for capability in (
        "records_identifier",
        "reattachable",
        "kill_signals",
        "separates_streams",
        "applies_env",
    ):
        assert isinstance(getattr(cls, capability), bool), capability
    # re-attaching needs the identifier the lost worker stored
    assert cls.records_identifier or not cls.reattachable


@pytest.mark.parametrize("kind", sorted(STEP_KINDS))
def test_runs_the_kinds_it_declares_and_refuses_the_others(backend: Backend, kind: str) -> None:
    launch = backend.step_of_kind(kind)
    cls = type(backend.infra)
    if kind not in cls.kinds:
        with pytest.raises(UnsupportedStepKind) as info:
            check_step(cls, launch.step)
        message = str(info.value)
        assert f"is a {kind} step" in message and f"the {cls.kind} infrastructure runs" in message
        assert all(other in message for other in runners_of(kind))  # where it can run
        return
    check_step(cls, launch.step)
    started, result = run(backend, launch)
    assert result.status_code == 0, (result, started.lines.lines)
    assert KIND_LINE.format(kind=kind) in started.lines.stream("stdout")
    assert started.read(result).ok


@pytest.mark.parametrize("kind", sorted(STEP_KINDS))
def test_a_failing_step_reports_its_exit_code(backend: Backend, kind: str) -> None:
    if kind not in backend.infra.kinds:
        pytest.skip(f"{backend.name} does not run {kind} steps")
    started, result = run(backend, backend.failing_step(kind))
    assert result.status_code == FAILING_CODES[kind], (result, started.lines.lines)
    outcome = started.read(result)
    assert not outcome.ok and outcome.error


# -- start and watch -------------------------------------------------------------------


def test_start_returns_the_identifier_before_the_step_ends(backend: Backend) -> None:
    gate = backend.gate()
    started = Started(backend, backend.python(BLOCKING, inputs={"gate": str(gate.path)}))
    assert isinstance(started.identifier, str) and started.identifier
    started.watch_in_background()  # as the worker does, right after start
    started.lines.wait_for("ready")  # output streams while the step runs
    assert started.running()  # the step is still waiting for its gate
    assert not started.capture.has_result
    gate.open()
    result = started.result()
    assert result.status_code == 0, (result, started.lines.lines)
    assert started.lines.stream("stdout") == ["ready", "released"]
    outcome = started.read(result)
    assert outcome.ok and outcome.output == "released"


def test_a_python_steps_value_is_read_through_its_kind(backend: Backend) -> None:
    value = {"n": 3, "text": "héllo ✓", "items": [1, None, True, 2.5], "nested": {"a": []}}
    launch = backend.python(f"def step(n):\n    return {value!r}\n", inputs={"n": 3})
    started, result = run(backend, launch)
    assert result.status_code == 0, (result, started.lines.lines)
    assert started.capture.has_result
    assert not any(RESULT_MARKER in line for line in started.lines.text())  # kept off the logs
    outcome = started.read(result)
    assert outcome == StepResult(True, output=value, has_output=True)


def test_a_python_step_that_raises_fails_with_its_error_and_traceback(backend: Backend) -> None:
    launch = backend.python(
        """
        def step():
            print("about to fail", flush=True)
            raise ValueError("bad input")
        """
    )
    started, result = run(backend, launch)
    assert result.status_code == 1, (result, started.lines.lines)
    assert started.capture.result_json is not None
    assert json.loads(started.capture.result_json) == {
        "ok": False,
        "error": "ValueError: bad input",
        "kind": "exception",
        "type": "ValueError",  # for retry_on / no_retry_on
        "mro": ["ValueError", "Exception", "BaseException"],
    }
    assert started.read(result) == StepResult(False, error="ValueError: bad input")
    assert "about to fail" in started.lines.stream("stdout")
    errors = error_lines(backend, started.lines)
    begins = errors.index("Traceback (most recent call last):")
    assert errors[-1] == "ValueError: bad input"
    # the traceback is all of stderr (on a merged log: all that follows the print)
    assert begins == (0 if backend.infra.separates_streams else 1), errors


def test_output_arrives_in_order_with_secrets_masked(backend: Backend) -> None:
    launch = backend.python(
        """
        import sys

        def step(n, token):
            for i in range(n):
                print(f"out {i}", flush=True)
                print(f"err {i}", file=sys.stderr, flush=True)
            print(f"token={token}", flush=True)
            return n
        """,
        inputs={"n": 40, "token": SECRET},
        secrets={"API_TOKEN": SECRET},
    )
    started, result = run(backend, launch)
    assert result.status_code == 0, (result, started.lines.lines)
    outs = [f"out {i}" for i in range(40)]
    errs = [f"err {i}" for i in range(40)]
    if backend.infra.separates_streams:
        assert started.lines.stream("stdout") == [*outs, f"token={MASK}"]
        assert started.lines.stream("stderr") == errs
    else:
        interleaved = [line for pair in zip(outs, errs, strict=True) for line in pair]
        assert started.lines.stream("stdout") == [*interleaved, f"token={MASK}"]
    assert SECRET not in repr(started.lines.lines)
    assert started.read(result).output == 40


def test_env_and_secrets_reach_the_step(backend: Backend) -> None:
    if not backend.infra.applies_env:
        pytest.skip(f"{backend.name} does not apply a step's env (applies_env is False)")
    launch = backend.python(
        f"""
        import os

        def step():
            print("secret:", os.environ["API_TOKEN"], flush=True)
            keys = ["STEP_VAR", "FERRYMAN_RUN_ID", "FERRYMAN_STEP", "FERRYMAN_ATTEMPT"]
            found = {{k: os.environ.get(k) for k in keys}}
            found["secret_ok"] = os.environ.get("API_TOKEN") == {SECRET!r}
            return found
        """,
        env={"STEP_VAR": "v1"},
        secrets={"API_TOKEN": SECRET},
    )
    started, result = run(backend, launch)
    assert result.status_code == 0, (result, started.lines.lines)
    assert started.read(result).output == {
        "STEP_VAR": "v1",
        "FERRYMAN_RUN_ID": launch.run_id,
        "FERRYMAN_STEP": launch.node,
        "FERRYMAN_ATTEMPT": "1",
        "secret_ok": True,
    }
    assert started.lines.stream("stdout") == [f"secret: {MASK}"]


# -- kill ------------------------------------------------------------------------------


def test_kill_stops_a_running_step_and_is_idempotent(backend: Backend) -> None:
    gate = backend.gate()
    started = Started(backend, backend.python(BLOCKING, inputs={"gate": str(gate.path)}))
    started.watch_in_background()
    started.lines.wait_for("ready")
    t0 = time.monotonic()
    backend.infra.kill(started.identifier, 30)
    backend.infra.kill(started.identifier, 30)  # twice while it runs: the same
    result = started.result()
    # the step stops on SIGTERM (or is abandoned at once): the grace is not waited out
    assert time.monotonic() - t0 < 15
    assert result.status_code == backend.killed_codes["polite"], result
    assert result.reason is not None and result.reason.startswith("killed"), result
    assert not started.read(result).ok
    backend.infra.kill(started.identifier, 30)  # and after it ended
    gate.open()  # whatever still runs of it must not be heard of any more
    time.sleep(0.5)
    assert started.lines.stream("stdout") == ["ready"]
    assert not started.capture.has_result


def test_kill_after_the_step_ended_is_a_no_op(backend: Backend) -> None:
    started, result = run(backend, backend.python("def step():\n    return 1\n"))
    assert result.status_code == 0
    t0 = time.monotonic()
    backend.infra.kill(started.identifier, 5)
    backend.infra.kill(started.identifier, 5)
    assert time.monotonic() - t0 < 10


def test_kill_is_graceful_first(backend: Backend) -> None:
    if not backend.infra.kill_signals:
        pytest.skip(f"{backend.name} abandons a killed step (kill_signals is False)")
    launch = backend.python(
        """
        import os, signal, time

        def stop(signum, frame):
            os.write(1, b"got SIGTERM\\n")  # print() is not safe in a signal handler
            os._exit(3)

        def step():
            signal.signal(signal.SIGTERM, stop)
            print("ready", flush=True)
            time.sleep(120)
        """
    )
    started = Started(backend, launch)
    started.watch_in_background()
    started.lines.wait_for("ready")
    t0 = time.monotonic()
    backend.infra.kill(started.identifier, 30)
    result = started.result()
    assert time.monotonic() - t0 < 15
    started.lines.wait_for("got SIGTERM", timeout=10)  # the step was asked first
    assert result.status_code != 0 and result.reason and result.reason.startswith("killed")


def test_kill_forces_a_step_that_ignores_sigterm_after_the_grace(backend: Backend) -> None:
    if not backend.infra.kill_signals:
        pytest.skip(f"{backend.name} abandons a killed step (kill_signals is False)")
    launch = backend.python(
        """
        import signal, time

        def step():
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            print("ready", flush=True)
            time.sleep(120)
        """
    )
    started = Started(backend, launch)
    started.watch_in_background()
    started.lines.wait_for("ready")
    t0 = time.monotonic()
    backend.infra.kill(started.identifier, 2)
    result = started.result()
    elapsed = time.monotonic() - t0
    assert 1.5 <= elapsed < 30, elapsed
    assert result.status_code == backend.killed_codes["forced"], result
    assert result.reason is not None and result.reason.startswith("killed"), result


def test_another_instance_can_kill_it(backend: Backend) -> None:
    if not backend.infra.records_identifier:
        pytest.skip(f"{backend.name}'s identifiers mean nothing to another worker")
    gate = backend.gate()
    started = Started(backend, backend.python(BLOCKING, inputs={"gate": str(gate.path)}))
    started.watch_in_background()
    started.lines.wait_for("ready")
    backend.new_instance().kill(started.identifier, 5)
    result = started.result()
    assert result.status_code != 0, result
    gate.open()
    assert not started.capture.has_result


# -- identifiers of nothing --------------------------------------------------------------


def vanished(backend: Backend) -> str:
    """The identifier of an attempt that was killed and watched to its end."""
    gate = backend.gate()
    started = Started(backend, backend.python(BLOCKING, inputs={"gate": str(gate.path)}))
    started.watch_in_background()
    started.lines.wait_for("ready")
    backend.infra.kill(started.identifier, 0)
    started.result()
    gate.open()
    return started.identifier


@pytest.mark.parametrize("garbage", ["", "garbage", "no/such/thing", "x:1:y", "vanished"])
def test_unknown_identifiers_are_a_clean_no_op(backend: Backend, garbage: str) -> None:
    identifier = vanished(backend) if garbage == "vanished" else garbage
    infra = backend.new_instance() if garbage != "vanished" else backend.infra
    t0 = time.monotonic()
    infra.kill(identifier, 1)
    result = infra.watch(identifier)
    assert result.status_code == EXIT_LOST, result
    assert result.identifier == identifier and result.reason
    if infra.reattachable:
        assert infra.attach(identifier, Lines()) is False
    else:
        with pytest.raises(NotImplementedError):
            infra.attach(identifier, Lines())
    assert time.monotonic() - t0 < 20


# -- preview -----------------------------------------------------------------------------


def test_preview_shows_the_step_and_masks_secrets(backend: Backend) -> None:
    launch = backend.python(
        "def preview_target(token, visible):\n    return visible\n",
        qualname="preview_target",
        inputs={"token": SECRET, "visible": "plain-input-value"},
        env={"STEP_VAR": "plain-env-value"},
        secrets={"API_TOKEN": SECRET},
    )
    preview = backend.infra.preview(launch)
    text = json.dumps(preview)  # JSON: shown by the CLI and the API
    assert SECRET not in text
    assert MASK in text
    assert "preview_target" in text and "plain-input-value" in text
    if backend.infra.applies_env:
        assert "STEP_VAR" in text and "plain-env-value" in text and "API_TOKEN" in text


# -- attach --------------------------------------------------------------------------------

#: Prints "before", marks it (a file), waits for its gate, prints "after",
#: marks that it is about to return, and returns "done".
RESUMABLE = """
import os, time
from pathlib import Path

def step(gate, started, ending):
    print("before", flush=True)
    Path(started).touch()
    while not os.path.exists(gate):
        time.sleep(0.02)
    print("after", flush=True)
    Path(ending).touch()
    return "done"
"""


def start_resumable(backend: Backend) -> tuple[Started, Gate, Gate]:
    """Start ``RESUMABLE`` on the instance under test (which nobody watches)."""
    gate, started, ending = backend.gate(), backend.gate("started"), backend.gate("ending")
    paths = {"gate": gate.path, "started": started.path, "ending": ending.path}
    launch = backend.python(RESUMABLE, inputs={k: str(p) for k, p in paths.items()})
    first = Started(backend, launch)
    wait_until(started.path.exists, what="the step to start")
    return first, gate, ending


def attach_again(backend: Backend, first: Started, since: dt.datetime) -> tuple[Any, Lines, Any]:
    """A new instance (a new worker) attaches to ``first``'s attempt."""
    second = backend.new_instance()
    lines = Lines()
    capture = OutputCapture(first.launch.nonce, lines, first.launch.mask)
    assert second.attach(first.identifier, capture, since) is True
    return second, lines, capture


def test_attach_resumes_after_a_lost_worker(backend: Backend) -> None:
    if not backend.infra.reattachable:
        pytest.skip(f"{backend.name} cannot re-attach (reattachable is False)")
    first, gate, _ = start_resumable(backend)
    backend.infra.close()  # the worker is lost: its streams and handles with it
    time.sleep(1.2)  # what the lost worker stored is older than ``since``
    second, lines, capture = attach_again(backend, first, dt.datetime.now(dt.UTC))
    gate.open()
    result = second.watch(first.identifier)
    assert result.status_code == 0 and result.identifier == first.identifier, result
    assert "after" in lines.stream("stdout")  # nothing since ``since`` is lost
    step = first.launch.step
    outcome = step_kind(step.kind).read_result(step, result.status_code, capture, result.reason)
    assert outcome.ok and outcome.output == "done"


def test_attach_recovers_a_result_written_while_nobody_watched(backend: Backend) -> None:
    if not backend.infra.reattachable:
        pytest.skip(f"{backend.name} cannot re-attach (reattachable is False)")
    first, gate, ending = start_resumable(backend)
    backend.infra.close()
    gate.open()
    wait_until(ending.path.exists, what="the step to finish while nobody watched")
    time.sleep(1.2)  # its result line is older than ``since``
    second, _, capture = attach_again(backend, first, dt.datetime.now(dt.UTC))
    result = second.watch(first.identifier)
    assert result.status_code == 0, result
    step = first.launch.step
    outcome = step_kind(step.kind).read_result(step, result.status_code, capture, result.reason)
    assert outcome.ok and outcome.output == "done"

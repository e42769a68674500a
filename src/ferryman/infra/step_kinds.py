"""Step kinds: what ferryman does with a step of each kind besides running it.

The step's model (``ferryman.domain.steps``) says what a step *is*; an
infrastructure says where it runs and which kinds it runs
(``Infrastructure.kinds``); the ``StepKind`` object of the step's kind says
how its outcome is *read*. The worker finds it with ``step_kind(step.kind)``
and calls ``read_result`` once the infrastructure reports the end of an
attempt, unless the worker itself stopped the attempt (timeout, cancel,
shutdown, lost lease): those outcomes are the worker's.

A new kind adds one ``StepKind`` subclass here, listed in ``STEP_KINDS``, next
to its model in ``ferryman.domain.steps``; nothing in the worker changes.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from ferryman.domain.retry import exception_refusal, exit_code_refusal
from ferryman.domain.spec import StepSpec
from ferryman.domain.steps import ContainerStep, PythonStep
from ferryman.infra.base import EXIT_KILLED, OutputCapture
from ferryman.runtime.loader import output_too_large

#: Why an output over the limit is not retried: the next attempt would return it too.
SAME_OUTPUT = "not retried: another attempt would return it again"


@dataclass(frozen=True)
class StepResult:
    """How one attempt ended, as its kind reads it."""

    ok: bool
    output: Any = None
    #: False when the step produces no output (its children get ``None``).
    has_output: bool = False
    error: str = ""
    #: Why this failure is not retried whatever ``retries`` says (the step's
    #: ``retry_on`` … lists), or None: then ``retries`` decides.
    no_retry: str | None = None


class UnknownStepKind(LookupError):
    """No ``StepKind`` object for a step's kind."""


class StepKind(ABC):
    """How ferryman treats the steps of one kind, whatever runs them."""

    #: The kind's name: the value of the step's ``kind`` field.
    name: ClassVar[str]
    #: True when the step runs ferryman's runtime entry point, which reads the
    #: payload (function reference, inputs, nonce) from ``FERRYMAN_STEP_PAYLOAD``.
    needs_payload: ClassVar[bool] = False

    @abstractmethod
    def read_result(
        self, step: StepSpec, exit_code: int, capture: OutputCapture, reason: str | None
    ) -> StepResult:
        """The outcome of an attempt that ended by itself.

        ``exit_code`` and ``reason`` come from ``Infrastructure.watch``;
        ``capture`` holds the result line the step printed, if any.
        """


class PythonKind(StepKind):
    """A python step succeeds when it exits 0 *and* printed an ``ok`` result
    line; the value of that line is its output. A failure that is an
    exception is retried only as the step's ``retry_on``/``no_retry_on`` allow
    (the result line names the exception's classes)."""

    name = "python"
    needs_payload = True

    def read_result(
        self, step: StepSpec, exit_code: int, capture: OutputCapture, reason: str | None
    ) -> StepResult:
        if capture.result_too_large is not None and capture.max_output_bytes is not None:
            error = output_too_large(capture.result_too_large, capture.max_output_bytes)
            return StepResult(False, error=error, no_retry=SAME_OUTPUT)
        if capture.result_json is None:
            why = reason or f"exit code {exit_code}"
            if exit_code == EXIT_KILLED:
                why = "killed"
            return StepResult(False, error=f"step ended without a result ({why})")
        try:
            result = json.loads(capture.result_json)
        except ValueError:
            result = None
        if not isinstance(result, dict):
            return StepResult(False, error="the step's result line could not be parsed")
        if result.get("ok") and exit_code == 0:
            # Outputs are shown to viewers and sent to receivers: masked like logs.
            return StepResult(
                True, output=capture.redact_value(result.get("value")), has_output=True
            )
        error = str(result.get("error") or f"exit code {exit_code}")
        if result.get("kind") == "output" and "size" in result:  # over the output limit
            return StepResult(False, error=error, no_retry=SAME_OUTPUT)
        return StepResult(False, error=error, no_retry=_exception_refusal(step, result))


def _exception_refusal(step: StepSpec, result: dict[str, Any]) -> str | None:
    if not isinstance(step, PythonStep) or not (step.retry_on or step.no_retry_on):
        return None
    raised, mro = result.get("type"), result.get("mro")
    if not isinstance(raised, str):
        return None  # not an exception (an output too large, a missing function …)
    names = [m for m in mro if isinstance(m, str)] if isinstance(mro, list) else [raised]
    return exception_refusal(raised, names, step.retry_on, step.no_retry_on)


class ContainerKind(StepKind):
    """A container step succeeds when it exits 0; it has no output. A
    container that exited with a code is retried only as the step's
    ``retry_on_exit_codes``/``no_retry_on_exit_codes`` allow."""

    name = "container"

    def read_result(
        self, step: StepSpec, exit_code: int, capture: OutputCapture, reason: str | None
    ) -> StepResult:
        if exit_code == 0:
            return StepResult(True)
        no_retry = None
        # 1-255: the container's own exit (not a kill, nor a lost container)
        if isinstance(step, ContainerStep) and 1 <= exit_code <= 255:
            no_retry = exit_code_refusal(
                exit_code, step.retry_on_exit_codes, step.no_retry_on_exit_codes
            )
        return StepResult(False, error=reason or f"exit code {exit_code}", no_retry=no_retry)


class TaskKind(StepKind):
    """A task step succeeds when its plugin reported success: the ``task``
    infrastructure writes a result line holding the outputs (exit code 0);
    otherwise the reason is the remote's message."""

    name = "task"

    def read_result(
        self, step: StepSpec, exit_code: int, capture: OutputCapture, reason: str | None
    ) -> StepResult:
        if exit_code == 0 and capture.result_json is not None:
            try:
                result = json.loads(capture.result_json)
            except ValueError:
                return StepResult(False, error="the task's result could not be parsed")
            return StepResult(
                True, output=capture.redact_value(result.get("value")), has_output=True
            )
        if exit_code == EXIT_KILLED and not reason:
            reason = "killed"
        return StepResult(False, error=reason or f"task ended with exit code {exit_code}")


#: Kind name → its ``StepKind``: one for every member of ``StepSpec``.
STEP_KINDS: dict[str, StepKind] = {k.name: k for k in (PythonKind(), ContainerKind(), TaskKind())}


def step_kind(name: str) -> StepKind:
    """The ``StepKind`` of ``name``; ``UnknownStepKind`` if there is none."""
    kind = STEP_KINDS.get(name)
    if kind is None:
        known = ", ".join(sorted(STEP_KINDS))
        raise UnknownStepKind(f"unknown step kind {name!r} (known: {known})")
    return kind

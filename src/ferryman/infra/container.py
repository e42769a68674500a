"""What a container runs, shared by the docker and kubernetes infrastructures.

A ``container`` step names an image and, optionally, a command and args. Its
strings may use placeholders that are filled in for each attempt:

``{{ params.NAME }}``   a run parameter
``{{ inputs.NAME }}``   a resolved step input (upstream outputs arrive here)
``{{ run_id }}``, ``{{ step }}``, ``{{ attempt }}``, ``{{ pipeline }}``, ``{{ namespace }}``

Strings are inserted as they are; other values as compact JSON. An unknown
placeholder is an error that names it (the attempt fails with that message).

The YAML loader's forms are understood too: ``${params.NAME}`` is the run
parameter, ``${steps.NAME}`` (or ``${steps.NAME.FIELD}``) the output of an
upstream step *declared as an input of the same name* (e.g.
``inputs: {load: "${steps.load}"}``); otherwise the attempt fails with a
message saying so. ``$${...}`` stands for the literal text ``${...}``.

A ``python`` step on a container infrastructure runs the runtime entry point
inside the image (``python -m ferryman.runtime``); the image must have
ferryman and the pipeline's code installed.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ferryman.domain.spec import ContainerStep
from ferryman.infra.base import PAYLOAD_ENV, RESERVED_PREFIX, StepLaunch
from ferryman.infra.step_kinds import step_kind

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)(?:\.([A-Za-z0-9_\-]+))?\s*\}\}")


class TemplateError(ValueError):
    """A placeholder that names nothing."""


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


_DOLLAR = re.compile(r"\$(\$?)\{\s*(params|steps)\.([^{}\s]+)\s*\}")
_ANY = re.compile(f"{_PLACEHOLDER.pattern}|{_DOLLAR.pattern}")


def _dollar(m: re.Match[str], launch: StepLaunch) -> str:
    if m.group(1):  # $${...}: the literal text ${...}
        return m.group(0)[1:]
    kind, token = m.group(2), m.group(3)
    if kind == "params":
        if token not in launch.params:
            known = ", ".join(sorted(launch.params)) or "none"
            raise TemplateError(f"unknown placeholder {m.group(0)!r} (params: {known})")
        return _text(launch.params[token])
    name, fields = token, list[str]()
    while name not in launch.inputs and "." in name:
        name, _, last = name.rpartition(".")
        fields.insert(0, last)
    if name not in launch.inputs:
        raise TemplateError(
            f"placeholder {m.group(0)!r}: the output of step {token.split('.')[0]!r} is not an "
            f'input of this step; declare it (inputs: {{{name}: "${{steps.{name}}}"}}) '
            f"or use {{{{ inputs.NAME }}}}"
        )
    value: Any = launch.inputs[name]
    for f in fields:
        if not isinstance(value, dict) or f not in value:
            raise TemplateError(f"placeholder {m.group(0)!r}: the output has no field {f!r}")
        value = value[f]
    return _text(value)


def render(template: str, launch: StepLaunch) -> str:
    """Fill the ``{{ … }}`` (and ``${params.…}``/``${steps.…}``) placeholders of one string."""
    scalars = {
        "run_id": launch.run_id,
        "step": launch.node,
        "attempt": launch.attempt,
        "pipeline": launch.pipeline,
        "namespace": launch.namespace,
    }
    maps = {"params": launch.params, "inputs": launch.inputs}

    def one(m: re.Match[str]) -> str:
        dollar = _DOLLAR.fullmatch(m.group(0))
        if dollar is not None:
            return _dollar(dollar, launch)
        head, key = m.group(1), m.group(2)
        if key is None and head in scalars:
            return _text(scalars[head])
        if key is not None and head in maps:
            if key not in maps[head]:
                known = ", ".join(sorted(maps[head])) or "none"
                raise TemplateError(f"unknown placeholder {m.group(0)!r} ({head}: {known})")
            return _text(maps[head][key])
        raise TemplateError(
            f"unknown placeholder {m.group(0)!r}: use params.NAME, inputs.NAME, run_id, "
            "step, attempt, pipeline or namespace"
        )

    return _ANY.sub(one, template)  # one pass: inserted values are never rendered again


def container_command(
    launch: StepLaunch, python: str = "python"
) -> tuple[list[str] | None, list[str] | None]:
    """``(command, args)`` for the container; ``None`` keeps the image's own.

    A container step's command and args are rendered; a python step runs the
    runtime entry point with ``python`` (its payload travels in the env, see
    ``container_env``).
    """
    step = launch.step
    if step_kind(step.kind).needs_payload:
        return [python, "-m", "ferryman.runtime"], None
    if not isinstance(step, ContainerStep):
        raise ValueError(f"a container infrastructure cannot run {step.kind} step {step.name!r}")
    command = [render(c, launch) for c in step.command] if step.command is not None else None
    args = [render(a, launch) for a in step.args] if step.args is not None else None
    return command, args


def container_env(launch: StepLaunch, base: dict[str, str | None] | None = None) -> dict[str, str]:
    """The container's environment: ``base`` (e.g. the infrastructure's
    configured env) + ferryman's variables + the step's env (rendered) +
    secrets; a ``None`` value at any layer removes the variable. The
    worker's own environment is never copied into a container, and no
    ``FERRYMAN_*`` variable but the step's own is set, from any layer."""
    merged: dict[str, str | None] = {
        k: v for k, v in (base or {}).items() if not k.startswith(RESERVED_PREFIX)
    }
    step_env: dict[str, str | None] = {
        k: (render(v, launch) if v is not None else None)
        for k, v in launch.env.items()
        if not k.startswith(RESERVED_PREFIX)
    }
    full = launch.full_env(base={})
    if not step_kind(launch.step.kind).needs_payload:
        full.pop(PAYLOAD_ENV, None)
    for k in step_env:
        full.pop(k, None)
    merged.update(full)
    merged.update(step_env)
    merged.update({k: v for k, v in launch.secrets.items() if not k.startswith(RESERVED_PREFIX)})
    return {k: v for k, v in merged.items() if v is not None}

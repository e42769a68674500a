"""Event triggers in the Python DSL: run a pipeline when another one's run ends.

::

    from ferryman import pipeline
    from ferryman.dsl.triggers import on_run, output, param, run_id

    @pipeline(
        triggers=[
            on_run(
                "extract",
                state="succeeded",
                params={"day": param("day"), "rows": output("load"), "source_run": run_id()},
            )
        ]
    )
    def report(day: str, rows: int, source_run: str) -> None: ...

``param``, ``output``, ``run_id`` and ``run_field`` stand for values of the
*triggering* run; anything else in ``params`` is a JSON literal (lists and
mappings may mix both). Importing this module is cheap (no pydantic).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Trigger", "TriggerRef", "on_run", "output", "param", "run_field", "run_id"]

State = Literal["succeeded", "failed", "cancelled"]
RunField = Literal["id", "pipeline", "namespace", "version", "state"]
_STATES = ("succeeded", "failed", "cancelled")
_FIELDS = ("id", "pipeline", "namespace", "version", "state")


class TriggerError(ValueError):
    """A trigger declaration that cannot be compiled."""


@dataclass(frozen=True)
class TriggerRef:
    """A value of the triggering run, resolved when the trigger fires."""

    kind: Literal["$param", "$step", "$run"]
    name: str

    def to_json(self) -> dict[str, str]:
        return {self.kind: self.name}


def param(name: str) -> TriggerRef:
    """The triggering run's parameter ``name``."""
    return TriggerRef("$param", _text("param", name))


def output(step: str) -> TriggerRef:
    """The output of the triggering run's step ``step`` (it must have produced one)."""
    return TriggerRef("$step", _text("output", step))


def run_id() -> TriggerRef:
    """The triggering run's id."""
    return TriggerRef("$run", "id")


def run_field(name: RunField) -> TriggerRef:
    """A field of the triggering run: ``id``, ``pipeline``, ``namespace``,
    ``version`` or ``state`` (the state it reached)."""
    if name not in _FIELDS:
        raise TriggerError(f"run_field: unknown field {name!r} (known: {', '.join(_FIELDS)})")
    return TriggerRef("$run", name)


@dataclass(frozen=True)
class Trigger:
    """A compiled ``on_run`` declaration (see ``on_run``)."""

    pipeline: str
    states: tuple[str, ...]
    params: dict[str, Any] = field(default_factory=dict)
    namespace: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    inherit_labels: bool = True

    def to_json(self) -> dict[str, Any]:
        """The ``TriggerSpec`` data of this trigger."""
        return {
            "pipeline": self.pipeline,
            "namespace": self.namespace,
            "states": list(self.states),
            "params": self.params,
            "labels": self.labels,
            "inherit_labels": self.inherit_labels,
        }


def on_run(
    pipeline: str,
    *,
    state: State | Sequence[State] = "succeeded",
    params: Mapping[str, Any] | None = None,
    namespace: str | None = None,
    labels: Mapping[str, str] | None = None,
    inherit_labels: bool = True,
) -> Trigger:
    """Run the decorated pipeline whenever a run of ``pipeline`` ends in ``state``.

    ``state`` is one final run state or several (``succeeded``, ``failed``,
    ``cancelled``). ``params`` maps parameters of the decorated pipeline to
    ``param(...)``, ``output(...)``, ``run_id()``, ``run_field(...)`` or JSON
    literals. ``namespace`` defaults to the decorated pipeline's own. The new
    run gets the triggering run's labels (unless ``inherit_labels=False``)
    plus ``labels``.
    """
    states = (state,) if isinstance(state, str) else tuple(state)
    bad = [s for s in states if s not in _STATES]
    if bad:
        raise TriggerError(
            f"on_run({pipeline!r}): unknown state(s) {bad}; a trigger fires on {', '.join(_STATES)}"
        )
    encoded = {
        str(k): _encode(v, f"on_run({pipeline!r}) params[{k!r}]") for k, v in (params or {}).items()
    }
    return Trigger(
        pipeline=pipeline,
        states=states,
        params=encoded,
        namespace=namespace,
        labels=dict(labels or {}),
        inherit_labels=inherit_labels,
    )


def _text(what: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise TriggerError(f"{what}() takes a non-empty name, not {value!r}")
    return value


def _encode(value: Any, where: str) -> Any:
    if isinstance(value, TriggerRef):
        return value.to_json()
    if isinstance(value, (list, tuple)):
        return [_encode(v, where) for v in value]
    if isinstance(value, dict):
        if len(value) == 1 and next(iter(value)) in ("$param", "$step", "$run", "$value"):
            _encode(next(iter(value.values())), where)  # must be plain JSON
            return {"$value": value}  # a literal that looks like a reference
        return {str(k): _encode(v, where) for k, v in value.items()}
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise TriggerError(
            f"{where}: {value!r} is not JSON-serialisable ({exc}); map parameters to "
            "param(...), output(...), run_id(), run_field(...) or JSON values"
        ) from None
    return value

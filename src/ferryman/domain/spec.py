"""The pipeline specification: what the DSL and YAML loader both compile to.

A ``PipelineSpec`` is plain data (JSON-serialisable). It is what gets stored,
hashed into a version, previewed and scheduled node by node.

Step inputs are *binding expressions*, JSON values in which these one-key
objects are references resolved when the step starts:

- ``{"$param": "name"}``: the run parameter ``name``;
- ``{"$step": "name"}``: the output of upstream step ``name``;
- ``{"$value": x}``: the literal ``x`` (used to escape a dict that would
  otherwise look like a reference).

Any other list or dict is walked recursively, so fan-in is simply a list of
``$step`` references.

Steps are a union of models discriminated by ``kind`` (``PythonStep``,
``ContainerStep``): see ``ferryman.domain.steps``.

A pipeline's *triggers* (``TriggerSpec``) map the parameters of a run started
by another pipeline's run. Their expressions use the same form, read against
the *triggering* run: ``{"$param": x}`` is its parameter, ``{"$step": y}`` the
output of its step ``y``, and ``{"$run": "id"}`` one of its fields (``id``,
``pipeline``, ``namespace``, ``version``, ``state``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import deque
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

# Steps and names are defined in their own modules; this module is where the
# whole spec is imported from, so they are re-exported here.
from ferryman.domain.names import NAME_RE as NAME_RE
from ferryman.domain.names import check_name as check_name
from ferryman.domain.schedules import ScheduleSpec
from ferryman.domain.steps import STEP_MODELS as STEP_MODELS
from ferryman.domain.steps import ContainerStep as ContainerStep
from ferryman.domain.steps import FunctionRef as FunctionRef
from ferryman.domain.steps import PythonStep as PythonStep
from ferryman.domain.steps import StepBase as StepBase
from ferryman.domain.steps import StepSpec as StepSpec
from ferryman.domain.steps import TaskStep as TaskStep
from ferryman.domain.steps import error_loc as error_loc
from ferryman.domain.steps import parse_step as parse_step

REF_KEYS = ("$param", "$step", "$value")

ParamType = Literal[
    "string", "integer", "number", "boolean", "array", "object", "date", "any", "json_config"
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ParamSpec(_Frozen):
    """One typed pipeline parameter."""

    name: str
    type: ParamType = "any"
    required: bool = True
    default: Any = None
    description: str = ""
    enum: list[Any] | None = None
    items: ParamType | None = None
    minimum: float | None = None
    maximum: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    nullable: bool = False
    # The JSON Schema a ``json_config`` value must satisfy (only that type has
    # one; left out of the JSON when absent, so older versions hash as before).
    json_schema: dict[str, Any] | None = Field(default=None, exclude_if=lambda v: v is None)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", v):
            raise ValueError(f"invalid parameter name {v!r}: use a Python identifier")
        return v

    @model_validator(mode="after")
    def _config_schema(self) -> ParamSpec:
        if self.type == "json_config":
            if self.json_schema is None:
                raise ValueError(f"parameter {self.name!r}: a json_config needs a 'schema'")
            from ferryman.domain.json_config import check_schema

            check_schema(self.name, self.json_schema)
        elif self.json_schema is not None:
            raise ValueError(f"parameter {self.name!r}: only a json_config has a 'schema'")
        return self


class ValidatorSpec(_Frozen):
    """A declarative validator applied to the parameters (see ``domain.validators``)."""

    kind: str
    fields: list[str] = Field(default_factory=list)
    options: dict[str, Any] = Field(default_factory=dict)


RunFinalState = Literal["succeeded", "failed", "cancelled"]
TRIGGER_STATES: tuple[str, ...] = ("succeeded", "failed", "cancelled")
TRIGGER_RUN_FIELDS: tuple[str, ...] = ("id", "pipeline", "namespace", "version", "state")


class TriggerMappingError(ValueError):
    """A trigger's parameter mapping cannot be evaluated against a run."""


def _succeeded() -> list[RunFinalState]:
    return ["succeeded"]


class TriggerSpec(_Frozen):
    """Run this pipeline when a run of ``pipeline`` ends in one of ``states``.

    ``params`` maps parameters of the *triggered* pipeline to expressions read
    against the *triggering* run (see the module docstring). ``labels`` are
    added to the triggered run's labels; with ``inherit_labels`` it also gets
    the triggering run's labels (the stated ones win).
    """

    pipeline: str
    namespace: str | None = None  # None: the triggered pipeline's own namespace
    states: list[RunFinalState] = Field(default_factory=lambda: _succeeded())
    params: dict[str, Any] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    inherit_labels: bool = True

    @field_validator("pipeline")
    @classmethod
    def _pipeline(cls, v: str) -> str:
        return check_name("pipeline", v)

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, v: str | None) -> str | None:
        return None if v is None else check_name("namespace", v)

    @model_validator(mode="after")
    def _check(self) -> TriggerSpec:
        errors: list[str] = []
        if not self.states:
            errors.append("list at least one state (succeeded, failed or cancelled)")
        if len(set(self.states)) != len(self.states):
            errors.append("a state is listed twice")
        for name, expr in self.params.items():
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
                errors.append(f"mapped name {name!r} is not a parameter name")
            errors.extend(f"params.{name}: {e}" for e in trigger_ref_problems(expr))
        if errors:
            raise ValueError("; ".join(errors))
        return self

    def source(self, namespace: str) -> tuple[str, str]:
        """The triggering pipeline as ``(namespace, name)``."""
        return (self.namespace or namespace, self.pipeline)

    def referenced(self) -> tuple[set[str], set[str]]:
        """The parameters and steps of the triggering pipeline this mapping reads."""
        params: set[str] = set()
        steps: set[str] = set()
        for kind, ref in iter_trigger_refs(self.params):
            if kind == "$param":
                params.add(ref)
            elif kind == "$step":
                steps.add(ref)
        return params, steps

    def describe(self) -> str:
        """One line for humans: ``on default/extract succeeded -> day, rows``."""
        ns = f"{self.namespace}/" if self.namespace else ""
        mapped = ", ".join(sorted(self.params)) or "no params"
        return f"on {ns}{self.pipeline} {'|'.join(self.states)} -> {mapped}"


def iter_trigger_refs(value: Any) -> list[tuple[str, Any]]:
    """All ``($param|$step|$run, name)`` references inside a trigger mapping."""
    found: list[tuple[str, Any]] = []
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            if len(v) == 1:
                ((k, inner),) = v.items()
                if k in ("$param", "$step", "$run"):
                    found.append((k, inner))
                    continue
                if k == "$value":
                    continue
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return found


def trigger_ref_problems(expr: Any) -> list[str]:
    """What is wrong with the references of one trigger mapping expression."""
    problems = []
    for kind, ref in iter_trigger_refs(expr):
        if not isinstance(ref, str) or not ref:
            problems.append(f"{kind} needs a name, not {ref!r}")
        elif kind == "$run" and ref not in TRIGGER_RUN_FIELDS:
            problems.append(f"unknown run field {ref!r} (known: {', '.join(TRIGGER_RUN_FIELDS)})")
    return problems


def resolve_trigger(
    value: Any, params: dict[str, Any], outputs: dict[str, Any], run: dict[str, Any]
) -> Any:
    """Evaluate a trigger mapping expression against the triggering run.

    ``outputs`` holds the outputs of the run's steps that produced one; a
    reference to any other step raises ``TriggerMappingError``.
    """
    if isinstance(value, dict):
        if len(value) == 1:
            ((k, inner),) = value.items()
            if k == "$param":
                return params.get(inner)
            if k == "$step":
                if inner not in outputs:
                    raise TriggerMappingError(f"step {inner!r} of the triggering run has no output")
                return outputs[inner]
            if k == "$run":
                return run.get(inner)
            if k == "$value":
                return inner
        return {k: resolve_trigger(v, params, outputs, run) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_trigger(v, params, outputs, run) for v in value]
    return value


class PipelineSpec(_Frozen):
    """A whole pipeline: parameters, validators and a static DAG of steps."""

    name: str
    description: str = ""
    params: list[ParamSpec] = Field(default_factory=list)
    validators: list[ValidatorSpec] = Field(default_factory=list)
    steps: list[StepSpec]
    infrastructure: str = "process"
    timeout: float | None = Field(default=None, gt=0)
    labels: dict[str, str] = Field(default_factory=dict)
    # Added after versions were first hashed: without triggers a pipeline
    # serialises (and so hashes) exactly as before.
    triggers: list[TriggerSpec] = Field(default_factory=list, exclude_if=lambda v: not v)
    # Schedules the pipeline declares (reconciled by name on deploy); the same
    # rule: without them a pipeline hashes as before.
    schedules: list[ScheduleSpec] = Field(default_factory=list, exclude_if=lambda v: not v)

    @model_validator(mode="before")
    @classmethod
    def _schedule_pipeline(cls, data: Any) -> Any:
        """A declared schedule runs the pipeline declaring it."""
        if isinstance(data, dict) and data.get("schedules") and isinstance(data.get("name"), str):
            data = dict(data)
            data["schedules"] = [
                {"pipeline": data["name"], **s} if isinstance(s, dict) else s
                for s in data["schedules"]
            ]
        return data

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name("pipeline", v)

    @model_validator(mode="after")
    def _graph(self) -> PipelineSpec:
        if not self.steps:
            raise ValueError(f"pipeline {self.name!r} has no steps")
        errors: list[str] = []
        names = [s.name for s in self.steps]
        seen: set[str] = set()
        for n in names:
            if n in seen:
                errors.append(f"step name {n!r} is used twice")
            seen.add(n)
        pnames = [p.name for p in self.params]
        if len(set(pnames)) != len(pnames):
            errors.append("a parameter name is used twice")
        for s in self.steps:
            if len(set(s.depends_on)) != len(s.depends_on):
                errors.append(f"step {s.name!r} lists a dependency twice")
            for dep in s.depends_on:
                if dep not in seen:
                    errors.append(f"step {s.name!r} depends on unknown step {dep!r}")
                if dep == s.name:
                    errors.append(f"step {s.name!r} depends on itself")
            for kind, ref in iter_refs(s.inputs):
                if kind == "$param" and ref not in pnames:
                    errors.append(f"step {s.name!r} uses unknown parameter {ref!r}")
                if kind == "$step" and ref not in s.depends_on:
                    errors.append(
                        f"step {s.name!r} uses the output of {ref!r} without depending on it"
                    )
        for v in self.validators:
            for f in v.fields:
                if f not in pnames:
                    errors.append(f"validator {v.kind!r} names unknown parameter {f!r}")
        errors.extend(self._trigger_problems(pnames))
        declared = [sch.name for sch in self.schedules]
        for n in sorted({n for n in declared if declared.count(n) > 1}):
            errors.append(f"schedule name {n!r} is used twice")
        for sch in self.schedules:
            if sch.pipeline != self.name:
                errors.append(f"schedule {sch.name!r} runs {sch.pipeline!r}, not this pipeline")
        if errors:
            raise ValueError("; ".join(errors))
        if len(topological_order(self.steps)) != len(self.steps):
            raise ValueError(f"pipeline {self.name!r} has a dependency cycle")
        return self

    def _trigger_problems(self, pnames: list[str]) -> list[str]:
        errors: list[str] = []
        seen: dict[tuple[str | None, str, str], int] = {}
        required = [p.name for p in self.params if p.required]
        for i, t in enumerate(self.triggers):
            where = f"trigger {i} (on {t.pipeline!r})"
            for name in t.params:
                if name not in pnames:
                    known = ", ".join(pnames) or "none"
                    errors.append(
                        f"{where} maps {name!r}, which is not a parameter of {self.name!r} "
                        f"(params: {known})"
                    )
            missing = [p for p in required if p not in t.params]
            if missing:
                errors.append(
                    f"{where} does not map the required parameter(s) {', '.join(missing)}"
                )
            for state in t.states:
                key = (t.namespace, t.pipeline, state)
                if key in seen:
                    errors.append(f"{where} repeats trigger {seen[key]} for state {state!r}")
                seen.setdefault(key, i)
        return errors

    def step(self, name: str) -> StepSpec:
        """The step called ``name`` (KeyError if none)."""
        index: dict[str, StepSpec] | None = self.__dict__.get("_index")
        if index is None:
            index = {s.name: s for s in self.steps}
            object.__setattr__(self, "_index", index)  # a cache, not part of the model
        return index[name]

    def canonical_json(self) -> str:
        """The JSON the version hashes: sorted keys, no spaces, and each step's
        ``legacy_nulls`` (so a pipeline hashes as it did before step kinds
        were split; see ``ferryman.domain.steps``)."""
        data = self.model_dump(mode="json")
        for step, dumped in zip(self.steps, data["steps"], strict=True):
            dumped.update(dict.fromkeys(step.legacy_nulls))
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @property
    def version(self) -> str:
        """Content hash identifying this exact pipeline definition."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:16]

    def downstream(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {s.name: [] for s in self.steps}
        for s in self.steps:
            for d in s.depends_on:
                out[d].append(s.name)
        return out


def topological_order(steps: list[StepSpec]) -> list[str]:
    """Kahn's algorithm; a result shorter than ``steps`` means a cycle."""
    indeg = {s.name: 0 for s in steps}
    down: dict[str, list[str]] = {s.name: [] for s in steps}
    for s in steps:
        for d in set(s.depends_on):
            if d in down:
                down[d].append(s.name)
                indeg[s.name] += 1
    queue = deque(n for n, k in indeg.items() if k == 0)
    order: list[str] = []
    while queue:
        n = queue.popleft()
        order.append(n)
        for m in down[n]:
            indeg[m] -= 1
            if indeg[m] == 0:
                queue.append(m)
    return order


def iter_refs(value: Any) -> list[tuple[str, Any]]:
    """All ``($param|$step, name)`` references inside a binding expression."""
    found: list[tuple[str, Any]] = []
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            if len(v) == 1:
                ((k, inner),) = v.items()
                if k in ("$param", "$step"):
                    found.append((k, inner))
                    continue
                if k == "$value":
                    continue
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return found


def resolve(value: Any, params: dict[str, Any], outputs: dict[str, Any]) -> Any:
    """Replace the references inside a binding expression with their values."""
    if isinstance(value, dict):
        if len(value) == 1:
            ((k, inner),) = value.items()
            if k == "$param":
                return params.get(inner)
            if k == "$step":
                return outputs[inner]
            if k == "$value":
                return inner
        return {k: resolve(v, params, outputs) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, params, outputs) for v in value]
    return value


def literal(value: Any) -> Any:
    """Encode a literal so that dicts that look like references stay literal."""
    if isinstance(value, dict):
        if len(value) == 1 and next(iter(value)) in REF_KEYS:
            return {"$value": value}
        return {k: literal(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [literal(v) for v in value]
    return value

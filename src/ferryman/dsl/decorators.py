"""The Python DSL: ``@step`` and ``@pipeline``.

Calling steps inside a pipeline body builds a *static* DAG: each call returns a
``NodeRef`` placeholder, and passing a ``NodeRef`` (or a list of them) to
another step creates the edge. The pipeline body runs once, at compile time,
with ``ParamRef`` placeholders for its parameters.

Outside a pipeline body a step is a plain function: ``extract("x")`` just
calls it, which keeps steps easy to unit-test.

Importing this module is cheap (no pydantic): the spec is compiled lazily.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import functools
import inspect
import json
import os
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, overload

from ferryman.dsl.errors import DSLError as DSLError
from ferryman.dsl.errors import code_error, raised_by_ferryman
from ferryman.dsl.step_options import USER_MODULE_PREFIX as USER_MODULE_PREFIX
from ferryman.dsl.step_options import check_step_options, exception_names

if TYPE_CHECKING:
    from ferryman.domain.spec import ParamSpec as ParamSpecModel
    from ferryman.domain.spec import PipelineSpec, ValidatorSpec

P = ParamSpec("P")
R = TypeVar("R")


_NO_DEFAULT: Any = inspect.Parameter.empty


@dataclass(frozen=True)
class Param:
    """Extra information about a pipeline parameter.

    Use it as the default value (``limit: int = Param(10, minimum=1)``) or in
    ``Annotated[int, Param(minimum=1)]``.
    """

    default: Any = _NO_DEFAULT
    description: str = ""
    minimum: float | None = None
    maximum: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    #: A JSON Schema: the parameter is a ``json_config`` checked against it.
    schema: dict[str, Any] | None = None


class _Placeholder:
    """Base of the values that stand for data while the DAG is being built."""

    def _refuse(self, *_: Any, **__: Any) -> Any:
        raise DSLError(
            f"{self!r} is a placeholder while the pipeline's DAG is built: pass it to "
            "steps instead of computing with it (the graph is static)"
        )

    __bool__ = __iter__ = __len__ = __contains__ = __getitem__ = _refuse
    __str__ = __format__ = __index__ = __int__ = __float__ = _refuse
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _refuse
    __truediv__ = __rtruediv__ = __floordiv__ = __rfloordiv__ = _refuse
    __mod__ = __rmod__ = __pow__ = __rpow__ = __neg__ = __pos__ = __abs__ = _refuse
    __and__ = __rand__ = __or__ = __ror__ = __xor__ = __invert__ = _refuse
    __lt__ = __gt__ = __le__ = __ge__ = __eq__ = __ne__ = _refuse
    __hash__ = object.__hash__


class ParamRef(_Placeholder):
    """Stands for a run parameter inside a pipeline body."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<param {self.name}>"


class NodeRef(_Placeholder):
    """Stands for the output of one step call inside a pipeline body."""

    def __init__(self, builder: _Builder, name: str) -> None:
        self._builder = builder
        self.name = name

    def __repr__(self) -> str:
        return f"<output of step {self.name}>"

    def after(self, *refs: NodeRef) -> NodeRef:
        """Make this step also wait for ``refs`` (ordering without data)."""
        node = self._builder.nodes[self.name]
        for r in refs:
            if not isinstance(r, NodeRef):
                raise DSLError(f"after() takes step outputs, got {r!r}")
            if r.name not in node["depends_on"]:
                node["depends_on"].append(r.name)
        return self


@dataclass
class _Builder:
    pipeline: str
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def unique(self, base: str) -> str:
        n = self.counts.get(base, 0) + 1
        self.counts[base] = n
        name = base if n == 1 else f"{base}-{n}"
        while name in self.nodes:
            n += 1
            self.counts[base] = n
            name = f"{base}-{n}"
        return name


_BUILDER: contextvars.ContextVar[_Builder | None] = contextvars.ContextVar(
    "ferryman_builder", default=None
)


def _encode(value: Any, deps: list[str], where: str) -> Any:
    """Turn a step argument into a binding expression, collecting step deps."""
    if isinstance(value, NodeRef):
        if value.name not in deps:
            deps.append(value.name)
        return {"$step": value.name}
    if isinstance(value, ParamRef):
        return {"$param": value.name}
    if isinstance(value, (list, tuple)):
        return [_encode(v, deps, where) for v in value]
    if isinstance(value, dict):
        if len(value) == 1 and next(iter(value)) in ("$param", "$step", "$value"):
            return {"$value": {k: _encode(v, deps, where) for k, v in value.items()}}
        return {str(k): _encode(v, deps, where) for k, v in value.items()}
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise DSLError(
            f"{where}: argument {value!r} is not JSON-serialisable ({exc}); "
            "step arguments must be JSON values, parameters or step outputs"
        ) from None
    return value


def _function_ref(fn: Callable[..., Any]) -> dict[str, Any]:
    qual = fn.__qualname__
    if "<locals>" in qual:
        raise DSLError(
            f"step {fn.__name__!r} must be defined at module level, not inside a function"
        )
    module = fn.__module__
    mod = __import__("sys").modules.get(module)
    file = getattr(mod, "__file__", None)
    if module == "__main__" or module.startswith(USER_MODULE_PREFIX):
        if not file:
            raise DSLError(f"cannot tell where step {fn.__name__!r} is defined")
        return {"file": os.path.abspath(file), "qualname": qual}
    if file and not _installed(file):
        # The user's own module (e.g. next to the pipeline file): found by path,
        # so the step does not depend on the worker's current directory.
        return {"file": os.path.abspath(file), "qualname": qual}
    return {"module": module, "qualname": qual}


def _installed(file: str) -> bool:
    """Whether ``file`` belongs to an installed package (site-packages or the stdlib)."""
    import sysconfig

    parts = set(os.path.abspath(file).split(os.sep))
    if parts & {"site-packages", "dist-packages"}:
        return True
    stdlib = sysconfig.get_paths().get("stdlib", "")
    return bool(stdlib) and os.path.abspath(file).startswith(stdlib + os.sep)


class Step(Generic[P, R]):
    """A function decorated with ``@step``."""

    def __init__(self, fn: Callable[P, R], options: dict[str, Any]) -> None:
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.__ferryman_fn__ = fn
        self.options = options
        self.step_name: str = options.pop("name", None) or fn.__name__

    def with_options(self, **options: Any) -> Step[P, R]:
        """A copy of this step with some options replaced (e.g. ``name``, ``retries``)."""
        check_step_options(options, f"step {self.step_name!r}: with_options: ")
        merged = {**self.options, "name": self.step_name, **options}
        return Step(self.fn, merged)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        builder = _BUILDER.get()
        if builder is None:
            return self.fn(*args, **kwargs)
        after = kwargs.pop("wait_for", None)
        try:
            bound = inspect.signature(self.fn).bind(*args, **kwargs)
        except TypeError as exc:
            raise DSLError(f"step {self.step_name!r}: {exc}") from None
        name = builder.unique(self.step_name)
        deps: list[str] = []
        inputs = {k: _encode(v, deps, f"step {name!r}") for k, v in bound.arguments.items()}
        if after is not None:
            for r in after if isinstance(after, (list, tuple)) else [after]:
                if not isinstance(r, NodeRef):
                    raise DSLError(f"step {name!r}: wait_for takes step outputs, got {r!r}")
                if r.name not in deps:
                    deps.append(r.name)
        options = dict(self.options)
        for key in ("retry_on", "no_retry_on"):
            if key in options:
                options[key] = exception_names(options[key], f"step {name!r}: {key}")
        builder.nodes[name] = {
            "name": name,
            "kind": "python",
            "function": _function_ref(self.fn),
            "inputs": inputs,
            "depends_on": deps,
            **options,
        }
        return NodeRef(builder, name)  # type: ignore[return-value]


def _template(value: Any, inputs: dict[str, Any], deps: list[str], where: str) -> str:
    """A command/arg of a container step: text, a parameter or a step output
    (the latter two become ``{{ params.X }}`` / ``{{ inputs.X }}`` placeholders)."""
    if isinstance(value, ParamRef):
        return "{{ params." + value.name + " }}"
    if isinstance(value, NodeRef):
        key = value.name.replace("-", "_")
        inputs.setdefault(key, _encode(value, deps, where))
        return "{{ inputs." + key + " }}"
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise DSLError(
        f"{where}: command and args take text, numbers, parameters or step outputs, got {value!r}"
    )


def container(
    name: str,
    image: str,
    *,
    command: list[Any] | None = None,
    args: list[Any] | None = None,
    inputs: dict[str, Any] | None = None,
    wait_for: Any = None,
    **options: Any,
) -> Any:
    """A ``container`` step, inside a ``@pipeline`` function: runs ``image``
    (with ``command``/``args``) on the docker or kubernetes infrastructure.

    ``command``/``args`` items are text (``{{ params.X }}``, ``{{ inputs.X }}``,
    ``{{ run_id }}`` … placeholders are filled in per attempt), pipeline
    parameters, or other steps' outputs (passed as placeholders). ``inputs``
    names more values for the placeholders. The step's output is ``None``;
    use ``wait_for`` (or its return value with ``.after``) to order steps.
    Other options as for ``@step`` (``infrastructure``, ``env``, ``secrets``,
    ``retries``, ``timeout``, ``resources``, ``infra_overrides`` …), but
    ``retry_on_exit_codes``/``no_retry_on_exit_codes`` (exit codes) instead
    of ``retry_on``/``no_retry_on``.
    """
    builder = _BUILDER.get()
    if builder is None:
        raise DSLError(f"container step {name!r} must be declared inside a @pipeline function")
    check_step_options({**options, "name": name}, f"container step {name!r}: ", "container")
    node_name = builder.unique(name)
    where = f"container step {node_name!r}"
    deps: list[str] = []
    encoded = {str(k): _encode(v, deps, where) for k, v in (inputs or {}).items()}
    cmd = [_template(c, encoded, deps, where) for c in command] if command is not None else None
    arg = [_template(a, encoded, deps, where) for a in args] if args is not None else None
    if wait_for is not None:
        for r in wait_for if isinstance(wait_for, (list, tuple)) else [wait_for]:
            if not isinstance(r, NodeRef):
                raise DSLError(f"{where}: wait_for takes step outputs, got {r!r}")
            if r.name not in deps:
                deps.append(r.name)
    builder.nodes[node_name] = {
        "name": node_name,
        "kind": "container",
        "image": image,
        "command": cmd,
        "args": arg,
        "inputs": encoded,
        "depends_on": deps,
        **options,
    }
    return NodeRef(builder, node_name)


def _task_config(value: Any, inputs: dict[str, Any], deps: list[str], where: str) -> Any:
    """A task step's config: parameters and step outputs become placeholders
    (rendered per attempt); other JSON values are kept as they are."""
    if isinstance(value, ParamRef | NodeRef):
        return _template(value, inputs, deps, where)
    if isinstance(value, dict):
        return {str(k): _task_config(v, inputs, deps, where) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_task_config(v, inputs, deps, where) for v in value]
    return value


def task(
    name: str,
    type: str,
    *,
    config: dict[str, Any] | None = None,
    plugin: str | None = None,
    inputs: dict[str, Any] | None = None,
    wait_for: Any = None,
    **options: Any,
) -> Any:
    """A ``task`` step, inside a ``@pipeline`` function: the plugin that
    handles task ``type`` (or ``plugin``) does it on a remote service.

    ``config`` is the plugin's task configuration; its strings may use the
    placeholders of container steps (``{{ params.X }}``, ``{{ inputs.X }}``,
    ``{{ run_id }}`` ...), and parameters or step outputs given as values
    become such placeholders. The step's output is what the plugin returns.
    Other options as for ``@step`` (``retries``, ``timeout``, ``secrets`` ...).
    """
    builder = _BUILDER.get()
    if builder is None:
        raise DSLError(f"task step {name!r} must be declared inside a @pipeline function")
    check_step_options({**options, "name": name}, f"task step {name!r}: ")
    node_name = builder.unique(name)
    where = f"task step {node_name!r}"
    deps: list[str] = []
    encoded = {str(k): _encode(v, deps, where) for k, v in (inputs or {}).items()}
    cfg = _task_config(config or {}, encoded, deps, where)
    if wait_for is not None:
        for r in wait_for if isinstance(wait_for, (list, tuple)) else [wait_for]:
            if not isinstance(r, NodeRef):
                raise DSLError(f"{where}: wait_for takes step outputs, got {r!r}")
            if r.name not in deps:
                deps.append(r.name)
    node: dict[str, Any] = {
        "name": node_name,
        "kind": "task",
        "type": type,
        "config": cfg,
        "inputs": encoded,
        "depends_on": deps,
        **options,
    }
    if plugin is not None:
        node["plugin"] = plugin
    builder.nodes[node_name] = node
    return NodeRef(builder, node_name)


@overload
def step(fn: Callable[P, R], /) -> Step[P, R]: ...
@overload
def step(**options: Any) -> Callable[[Callable[P, R]], Step[P, R]]: ...
def step(fn: Callable[P, R] | None = None, /, **options: Any) -> Any:
    """Declare a step. Options: ``name``, ``retries``, ``retry_delay``,
    ``retry_backoff``, ``retry_jitter``, ``retry_max_delay``, ``retry_on`` and
    ``no_retry_on`` (exception classes or dotted names: only those failures
    are retried / those are not), ``timeout``, ``infrastructure``,
    ``infra_overrides``, ``env``, ``secrets``, ``resources``.
    """
    check_step_options(options, "")

    def wrap(f: Callable[P, R]) -> Step[P, R]:
        return Step(f, dict(options))

    return wrap(fn) if fn is not None else wrap


_PRIMITIVE: dict[Any, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    dict: "object",
    list: "array",
    dt.date: "date",
    Any: "any",
}


def _param_spec(
    name: str, annotation: Any, default: Any, where: str
) -> tuple[ParamSpecModel, list[ValidatorSpec]]:
    from ferryman.domain.markers import FieldValidator
    from ferryman.domain.spec import ParamSpec as ParamSpecModel

    info = default if isinstance(default, Param) else Param(default=default)
    validators: list[ValidatorSpec] = []
    extra: dict[str, Any] = {}
    ann = annotation
    if typing.get_origin(ann) is typing.Annotated:
        base, *meta = typing.get_args(ann)
        ann = base
        for m in meta:
            if isinstance(m, FieldValidator):
                validators.append(m.to_spec(name))
            elif isinstance(m, Param):
                # Fields set on the Annotated Param fill in what the default's Param left unset.
                fields = ("description", "minimum", "maximum", "min_length", "max_length",
                          "pattern", "schema")  # fmt: skip
                merged = {
                    k: getattr(info, k) if getattr(info, k) not in (None, "") else getattr(m, k)
                    for k in fields
                }
                info = Param(
                    default=info.default if info.default is not _NO_DEFAULT else m.default,
                    **merged,
                )
    nullable = False
    origin = typing.get_origin(ann)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        nullable = len(args) < len(typing.get_args(ann))
        if len(args) != 1:
            raise DSLError(f"{where}: parameter {name!r} has an unsupported union type")
        ann = args[0]
        origin = typing.get_origin(ann)
    if ann is inspect.Parameter.empty:
        ptype = "any"
    elif origin is typing.Literal:
        values = list(typing.get_args(ann))
        extra["enum"] = values
        ptype = _PRIMITIVE.get(type(values[0]), "any")
    elif origin in (list, Sequence, tuple):
        ptype = "array"
        item_args = typing.get_args(ann)
        if item_args:
            item = _PRIMITIVE.get(item_args[0])
            if item is None:
                raise DSLError(f"{where}: parameter {name!r}: unsupported list item type")
            extra["items"] = item
    elif origin is dict:
        ptype = "object"
    elif ann in _PRIMITIVE:
        ptype = _PRIMITIVE[ann]
    else:
        raise DSLError(
            f"{where}: parameter {name!r} has unsupported type {ann!r}; use str, int, "
            "float, bool, date, list[...], dict, Literal[...] or Optional of those"
        )
    if info.schema is not None:  # a configuration checked against its JSON Schema
        ptype = "json_config"
        extra["json_schema"] = info.schema
    has_default = info.default is not _NO_DEFAULT
    default_value = info.default if has_default else None
    if has_default and isinstance(default_value, dt.date):
        default_value = default_value.isoformat()
    if has_default:
        try:
            json.dumps(default_value)
        except (TypeError, ValueError):
            raise DSLError(f"{where}: default of {name!r} is not JSON-serialisable") from None
    spec = ParamSpecModel(
        name=name,
        type=ptype,
        required=not has_default,
        default=default_value,
        description=info.description,
        minimum=info.minimum,
        maximum=info.maximum,
        min_length=info.min_length,
        max_length=info.max_length,
        pattern=info.pattern,
        nullable=nullable or (has_default and default_value is None),
        **extra,
    )
    return spec, validators


class Pipeline:
    """A function decorated with ``@pipeline``: compiles to a ``PipelineSpec``."""

    def __init__(self, fn: Callable[..., Any], options: dict[str, Any]) -> None:
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.name: str = options.pop("name", None) or fn.__name__
        self.options = options
        self._spec: PipelineSpec | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise DSLError(
            f"pipeline {self.name!r} is not called directly: run it with "
            f"`ferryman run FILE:{self.fn.__name__}` or compile it with .spec()"
        )

    def spec(self) -> PipelineSpec:
        """Compile (once) to the static ``PipelineSpec``."""
        if self._spec is None:
            self._spec = self._compile()
        return self._spec

    def _compile(self) -> PipelineSpec:
        from pydantic import ValidationError

        from ferryman.domain.spec import PipelineSpec, error_loc, parse_step

        where = f"pipeline {self.name!r}"
        try:
            hints = typing.get_type_hints(self.fn, include_extras=True)
        except Exception as exc:  # an annotation naming something undefined
            if raised_by_ferryman(exc):
                raise
            raise code_error(
                exc, inspect.getsourcefile(self.fn), self.fn.__code__.co_firstlineno
            ) from exc
        params = []
        validators = list(self.options.get("validators", []))
        refs: dict[str, ParamRef] = {}
        for pname, p in inspect.signature(self.fn).parameters.items():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise DSLError(f"{where}: *args/**kwargs parameters are not supported")
            spec, vals = _param_spec(pname, hints.get(pname, p.annotation), p.default, where)
            params.append(spec)
            validators.extend(vals)
            refs[pname] = ParamRef(pname)
        builder = _Builder(self.name)
        token = _BUILDER.set(builder)
        try:
            self.fn(**refs)
        except Exception as exc:
            # The body is the user's code: report where it went wrong (a
            # NameError, a placeholder used as a value …), not ferryman's stack.
            if raised_by_ferryman(exc):
                raise
            raise code_error(
                exc, inspect.getsourcefile(self.fn), self.fn.__code__.co_firstlineno
            ) from exc
        finally:
            _BUILDER.reset(token)
        if not builder.nodes:
            raise DSLError(f"{where}: the body calls no step")
        from ferryman.domain.validators import check_validator_spec

        for v in validators:
            try:
                check_validator_spec(v)
            except ValueError as exc:
                raise DSLError(f"{where}: {exc}") from None
        try:
            steps = [parse_step(n) for n in builder.nodes.values()]
            compiled = PipelineSpec(
                name=self.name,
                description=self.options.get("description") or inspect.getdoc(self.fn) or "",
                params=params,
                validators=validators,
                steps=steps,
                infrastructure=self.options.get("infrastructure", "process"),
                timeout=self.options.get("timeout"),
                labels=self.options.get("labels") or {},
                triggers=self._triggers(where),
                schedules=self._schedules(where),
            )
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(x) for x in error_loc(e['loc']))}: {e['msg']}"
                if error_loc(e["loc"])
                else e["msg"]
                for e in exc.errors(include_url=False)
            )
            raise DSLError(f"{where}: {problems}") from None
        from ferryman.dsl.defaults import default_problems

        bad = default_problems(compiled)
        if bad:
            listed = "".join(f"\n  - {path}: {message}" for path, message in bad)
            raise DSLError(f"{where}: invalid parameter defaults:{listed}")
        return compiled

    def _schedules(self, where: str) -> list[dict[str, Any]]:
        raw = self.options.get("schedules") or []
        if not isinstance(raw, (list, tuple)) or not all(isinstance(x, dict) for x in raw):
            raise DSLError(
                f"{where}: schedules must be a list of cron(...) or interval(...) declarations"
            )
        return [dict(x) for x in raw]

    def _triggers(self, where: str) -> list[dict[str, Any]]:
        from ferryman.dsl.triggers import Trigger

        raw = self.options.get("triggers") or []
        if not isinstance(raw, (list, tuple)):
            raise DSLError(f"{where}: triggers must be a list of on_run(...) declarations")
        out = []
        for i, t in enumerate(raw):
            if not isinstance(t, Trigger):
                raise DSLError(
                    f"{where}: triggers[{i}] is {t!r}; declare triggers with on_run(...)"
                )
            out.append(t.to_json())
        return out


_PIPELINE_OPTIONS = {
    "name",
    "description",
    "infrastructure",
    "timeout",
    "labels",
    "validators",
    "triggers",
    "schedules",
}


@overload
def pipeline(fn: Callable[..., Any], /) -> Pipeline: ...
@overload
def pipeline(**options: Any) -> Callable[[Callable[..., Any]], Pipeline]: ...
def pipeline(fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Declare a pipeline. Options: ``name``, ``description``, ``infrastructure``
    (default for its steps), ``timeout`` (whole run, seconds), ``labels``,
    ``validators`` (e.g. ``[required_together("start", "end")]``), ``triggers``
    (e.g. ``[on_run("extract", params={"day": param("day")})]``, see
    ``ferryman.dsl.triggers``), ``schedules`` (e.g. ``[cron("0 3 * * *")]``, see
    ``ferryman.dsl.schedules``)."""
    unknown = set(options) - _PIPELINE_OPTIONS
    if unknown:
        raise DSLError(
            f"unknown pipeline option(s) {sorted(unknown)}; known: {sorted(_PIPELINE_OPTIONS)}"
        )

    def wrap(f: Callable[..., Any]) -> Pipeline:
        return Pipeline(f, dict(options))

    return wrap(fn) if fn is not None else wrap


def pipelines_in(namespace: dict[str, Any]) -> list[Pipeline]:
    """Every ``Pipeline`` object among the values of a module namespace."""
    return [v for v in namespace.values() if isinstance(v, Pipeline)]


def fan_in(refs: Iterable[Any]) -> list[Any]:
    """Collect step outputs into one list argument (readability helper)."""
    return list(refs)

"""The ``params`` and ``validators`` sections of a pipeline file."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from ferryman.domain.spec import PipelineSpec, ValidatorSpec
from ferryman.domain.validators import check_validator_spec
from ferryman.dsl.defaults import default_problems
from ferryman.dsl.yaml_loader.context import Context, clean_message, describe, join_path, loc_path

PARAM_TYPES = (
    "string",
    "integer",
    "number",
    "boolean",
    "array",
    "object",
    "date",
    "any",
    "json_config",
)
TYPE_ALIASES = {
    "str": "string",
    "int": "integer",
    "float": "number",
    "bool": "boolean",
    "list": "array",
    "dict": "object",
}


def compile_params(ctx: Context, raw: Any) -> Any:
    """Parameter definitions (name → definition or type name) as ``ParamSpec`` data."""
    if raw is None:
        return []
    if not isinstance(raw, dict):
        ctx.problem("params", f"must be a mapping of name to definition, not {describe(raw)}")
        return []
    out: list[dict[str, Any]] = []
    for name, definition in raw.items():
        path = f"params.{name}"
        ctx.param_names.append(name)
        if definition is None:
            d: dict[str, Any] = {}
        elif isinstance(definition, str):
            d = {"type": definition}
        elif isinstance(definition, dict):
            d = dict(definition)
        else:
            ctx.problem(path, f"must be a mapping or a type name, not {describe(definition)}")
            continue
        for key in ("type", "items"):
            if key in d:
                d[key] = _param_type(ctx, d[key], f"{path}.{key}")
        if "schema" in d:  # a json_config's JSON Schema
            d["json_schema"] = d.pop("schema")
        if "required" not in d:
            d["required"] = "default" not in d
        if "nullable" not in d and d["required"] is False and d.get("default") is None:
            d["nullable"] = True
        d["name"] = name
        ctx.param_order.append(name)
        out.append(d)
    return out


def _param_type(ctx: Context, value: Any, path: str) -> str:
    if isinstance(value, str):
        t = TYPE_ALIASES.get(value, value)
        if t in PARAM_TYPES:
            return t
    ctx.problem(path, f"unknown type {value!r} (use one of: {', '.join(PARAM_TYPES)})")
    return "any"


def check_defaults(ctx: Context, spec: PipelineSpec) -> None:
    """Check the defaults of optional parameters against their types."""
    for path, message in default_problems(spec):
        ctx.problem(path, message)


def compile_validators(ctx: Context, raw: Any) -> Any:
    """Validator entries as ``ValidatorSpec`` data (extra keys are options)."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        ctx.problem("validators", f"must be a list, not {describe(raw)}")
        return []
    out: list[dict[str, Any]] = []
    for i, item in enumerate(raw):
        path = f"validators[{i}]"
        if not isinstance(item, dict):
            ctx.problem(path, f"must be a mapping with a 'kind', not {describe(item)}")
            continue
        d = {k: item[k] for k in ("kind", "fields") if k in item}
        if isinstance(d.get("fields"), str):
            d["fields"] = [d["fields"]]
        options = item.get("options", {})
        if not isinstance(options, dict):
            ctx.problem(f"{path}.options", f"must be a mapping, not {describe(options)}")
            continue
        options = dict(options)
        for k, v in item.items():
            if k in ("kind", "fields", "options"):
                continue
            if k in options:
                ctx.problem(f"{path}.{k}", "given both here and under 'options'")
            options[k] = v
        if d.get("kind") == "custom" and isinstance(options.get("ref"), str):
            options["ref"] = _custom_ref(ctx, options["ref"])
        d["options"] = options
        try:
            spec = ValidatorSpec.model_validate(d)
        except ValidationError as exc:
            for e in exc.errors(include_url=False):
                ctx.problem(join_path(path, loc_path(e["loc"])), clean_message(e["msg"]))
            continue
        try:
            check_validator_spec(spec)
        except ValueError as exc:
            ctx.problem(path, str(exc))
            continue
        for j, field in enumerate(spec.fields):
            if field not in ctx.param_names:
                ctx.problem(f"{path}.fields[{j}]", f"unknown parameter {field!r}", graph=True)
        out.append(spec.model_dump())
    return out


def _custom_ref(ctx: Context, ref: str) -> str:
    target, sep, qualname = ref.rpartition(":")
    if sep and target.endswith(".py"):
        return f"{ctx.abspath(target)}:{qualname}"
    return ref

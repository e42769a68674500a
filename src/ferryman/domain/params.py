"""Typed parameters: a pydantic model built from ``ParamSpec``s, and validation
that reports *every* error with its field path and reason."""

from __future__ import annotations

import datetime as dt
import difflib
import json
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, create_model

# ParamError and ParamsInvalid are imported from here too (their home before
# they got their own module).
from ferryman.domain.json_config import json_config_checker
from ferryman.domain.param_errors import ParamError as ParamError
from ferryman.domain.param_errors import ParamsInvalid as ParamsInvalid
from ferryman.domain.spec import ParamSpec, PipelineSpec
from ferryman.domain.validators import run_validators

_SCALARS: dict[str, Any] = {
    "string": str,
    "integer": int,
    "number": float,
    "boolean": bool,
    "object": dict[str, Any],
    "date": dt.date,
    "any": Any,
}


def _python_type(p: ParamSpec) -> Any:
    if p.type == "json_config":
        assert p.json_schema is not None  # ParamSpec checks it
        t: Any = Annotated[Any, AfterValidator(json_config_checker(p.json_schema))]
        return t | None if p.nullable else t
    if p.enum:
        t = Literal[tuple(p.enum)]
    elif p.type == "array":
        item = _SCALARS.get(p.items or "any", Any)
        t = list[item]  # type: ignore[valid-type]
    else:
        t = _SCALARS[p.type]
    if p.nullable:
        t = t | None
    return t


class _ParamsBase(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)


def build_model(spec: PipelineSpec) -> type[BaseModel]:
    """The pydantic model of a pipeline's parameters (cached per version)."""
    key = (spec.name, json.dumps([p.model_dump(mode="json") for p in spec.params], sort_keys=True))
    model = _MODELS.get(key)
    if model is None:
        if len(_MODELS) > 256:
            _MODELS.clear()
        model = _MODELS[key] = _build(spec.name, spec.params)
    return model


_MODELS: dict[tuple[str, str], type[BaseModel]] = {}


def _build(name: str, params: list[ParamSpec]) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for p in params:
        constraints: dict[str, Any] = {"description": p.description or None}
        if p.minimum is not None:
            constraints["ge"] = p.minimum
        if p.maximum is not None:
            constraints["le"] = p.maximum
        if p.min_length is not None:
            constraints["min_length"] = p.min_length
        if p.max_length is not None:
            constraints["max_length"] = p.max_length
        if p.pattern is not None:
            constraints["pattern"] = p.pattern
        default = ... if p.required else p.default
        if p.type == "date" and isinstance(default, str):
            default = dt.date.fromisoformat(default)
        fields[p.name] = (_python_type(p), Field(default, **constraints))
    model: type[BaseModel] = create_model(
        f"{name.replace('-', '_').replace('.', '_')}_params", __base__=_ParamsBase, **fields
    )
    return model


def json_schema(spec: PipelineSpec) -> dict[str, Any]:
    """JSON Schema of the pipeline's parameters."""
    schema = build_model(spec).model_json_schema()
    schema["title"] = f"{spec.name} parameters"
    return schema


def _path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(x) for x in loc)


def _reason(e: Any, spec: PipelineSpec) -> str:
    """pydantic's message, said for a pipeline's parameters: an unknown name
    with the closest known one; a number given for a text parameter with how
    to give it as text (JSON values are not converted: ``"5"``, not ``5``)."""
    if e["type"] == "extra_forbidden":
        names = [p.name for p in spec.params]
        close = difflib.get_close_matches(str(e["loc"][0]), names, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"unknown parameter ({hint}known: {', '.join(names) or 'none'})"
    given = e.get("input")
    if (
        e["type"] == "string_type"
        and isinstance(given, int | float)
        and not isinstance(given, bool)
    ):
        return f'{e["msg"]} (got the number {json.dumps(given)}: send it as text, "{given}")'
    return str(e["msg"]).removeprefix("Value error, ")


def validate_params(spec: PipelineSpec, raw: dict[str, Any] | None) -> dict[str, Any]:
    """Validate ``raw`` against the pipeline's parameters.

    Returns the normalised, JSON-compatible parameters (defaults filled in).
    Raises ``ParamsInvalid`` listing every problem: type errors from pydantic
    and the results of every declarative validator, together.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsInvalid([ParamError("", "parameters must be a JSON object")])
    errors: list[ParamError] = []
    values: dict[str, Any] = {}
    model = build_model(spec)
    try:
        values = model.model_validate(raw).model_dump(mode="json")
    except ValidationError as exc:
        for e in exc.errors(include_url=False):
            errors.append(ParamError(_path(e["loc"]), _reason(e, spec)))
    failed = {err.path.split(".")[0] for err in errors}
    # Validators see the raw values of fields that passed type checks, so a
    # type error and a rule violation on different fields are both reported.
    merged = {p.name: p.default for p in spec.params if not p.required}
    merged.update({k: v for k, v in (values or raw).items() if k not in failed})
    errors.extend(run_validators(spec.validators, merged, skip=failed))
    if errors:
        raise ParamsInvalid(errors)
    return values

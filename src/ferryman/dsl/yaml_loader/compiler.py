"""Compile parsed pipeline data into a ``PipelineSpec``, reporting every problem."""

from __future__ import annotations

import datetime as dt
import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ferryman.domain.spec import STEP_MODELS, ParamSpec, PipelineSpec, TriggerSpec, error_loc
from ferryman.dsl.yaml_loader.context import (
    Context,
    PipelineFileError,
    clean_message,
    describe,
    loc_path,
)
from ferryman.dsl.yaml_loader.params import check_defaults, compile_params, compile_validators
from ferryman.dsl.yaml_loader.steps import compile_steps
from ferryman.dsl.yaml_loader.triggers import compile_triggers


def spec_from_mapping(
    data: Mapping[str, Any],
    base_dir: Path | None = None,
    *,
    source: str | None = None,
    check_files: bool = True,
) -> PipelineSpec:
    """Compile parsed pipeline data (the file format above) into a ``PipelineSpec``.

    ``base_dir`` anchors relative ``.py`` references (default: the current
    directory); ``source`` names the data in error messages. With
    ``check_files`` a referenced ``.py`` file must exist. Raises
    ``PipelineFileError`` listing every problem.
    """
    name = source or "<pipeline>"
    if not isinstance(data, Mapping):
        raise PipelineFileError(
            name, [f"the top level must be a mapping of pipeline fields, not {describe(data)}"]
        )
    ctx = Context(Path(os.path.abspath(base_dir or Path.cwd())), check_files)
    spec = compile_mapping(ctx, data)
    if spec is None:
        raise PipelineFileError(name, ctx.problems)
    return spec


def compile_mapping(ctx: Context, raw: Mapping[str, Any]) -> PipelineSpec | None:
    """The spec, or ``None`` when ``ctx`` collected problems."""
    data = _plain(ctx, raw, "")
    out = {k: v for k, v in data.items() if k not in ("params", "validators", "steps", "triggers")}
    if "params" in data:
        out["params"] = compile_params(ctx, data["params"])
    if "validators" in data:
        out["validators"] = compile_validators(ctx, data["validators"])
    if "steps" in data:
        out["steps"] = compile_steps(ctx, data["steps"])
    if "triggers" in data:
        out["triggers"] = compile_triggers(ctx, data["triggers"])
    try:
        spec = PipelineSpec.model_validate(out)
    except ValidationError as exc:
        _pydantic_problems(ctx, exc)
        return None
    check_defaults(ctx, spec)
    return None if ctx.problems else spec


def _plain(ctx: Context, value: Any, path: str) -> Any:
    """Dates to ISO strings (as JSON would have them); mapping keys must be strings."""
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                ctx.problem(path, f"key {k!r} must be a string (quote it)")
                continue
            out[k] = _plain(ctx, v, f"{path}.{k}" if path else k)
        return out
    if isinstance(value, list):
        return [_plain(ctx, v, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def _pydantic_problems(ctx: Context, exc: ValidationError) -> None:
    """Record pydantic's errors with file paths (``steps[1].retries``)."""
    for e in exc.errors(include_url=False):
        raw = tuple(e["loc"])
        # inside a step, pydantic names the step's kind: it picks the model
        # used for suggestions, and is left out of the path
        step_model = None
        if len(raw) > 2 and raw[0] == "steps" and isinstance(raw[2], str):
            step_model = STEP_MODELS.get(raw[2])
        loc = error_loc(raw)
        if not loc:
            # The pipeline-level graph check; our own checks are more precise
            # and already reported the same problems when they found any.
            if not ctx.graph_problems:
                for part in clean_message(e["msg"]).split("; "):
                    ctx.problem("", part)
            continue
        if (
            loc[0] == "params"
            and len(loc) > 1
            and isinstance(loc[1], int)
            and loc[1] < len(ctx.param_order)
        ):
            loc = ("params", ctx.param_order[loc[1]], *loc[2:])
        message = clean_message(e["msg"])
        if e["type"] == "extra_forbidden":
            message = "unknown field" + _suggest(loc, step_model)
        ctx.problem(loc_path(loc), message)


def _suggest(loc: tuple[int | str, ...], step_model: type[BaseModel] | None) -> str:
    model: type[BaseModel] = PipelineSpec
    if len(loc) == 3 and loc[0] == "steps" and step_model is not None:
        model = step_model
    elif len(loc) == 3 and loc[0] == "params":
        model = ParamSpec
    elif len(loc) == 3 and loc[0] == "triggers":
        model = TriggerSpec
    elif len(loc) != 1:
        return ""
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""

"""The ``triggers`` section of a pipeline file."""

from __future__ import annotations

import re
from typing import Any

from ferryman.domain.spec import REF_KEYS
from ferryman.dsl.yaml_loader.context import Context, describe

_TRIGGER_REF = re.compile(r"\$\{\s*trigger\.(params|steps|run)\.([^{}\s]+)\s*\}")
_TRIGGER_EMBEDDED = re.compile(r"(?<!\$)\$\{\s*trigger\.")
_TRIGGER_KIND = {"params": "$param", "steps": "$step", "run": "$run"}


def compile_triggers(ctx: Context, raw: Any) -> Any:
    """Trigger entries as ``TriggerSpec`` data (``state`` becomes ``states``)."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        ctx.problem("triggers", f"must be a list of triggers, not {describe(raw)}")
        return []
    out: list[Any] = []
    for i, t in enumerate(raw):
        path = f"triggers[{i}]"
        if not isinstance(t, dict):
            ctx.problem(
                path, f"must be a mapping (pipeline, state, params), not {describe(t)}", graph=True
            )
            out.append({"pipeline": "invalid"})  # keeps the indexes of the others
            continue
        d = dict(t)
        if "state" in d:
            if "states" in d:
                ctx.problem(path, "give either state or states, not both")
            state = d.pop("state")
            d["states"] = state if isinstance(state, list) else [state]
        params = d.get("params")
        if isinstance(params, dict):
            d["params"] = {
                k: _trigger_binding(ctx, v, f"{path}.params.{k}") for k, v in params.items()
            }
        out.append(d)
    return out


def _trigger_binding(ctx: Context, value: Any, path: str) -> Any:
    """Turn ``${trigger.params|steps|run.x}`` strings into trigger references."""
    if isinstance(value, str):
        if value.startswith("$${") and _TRIGGER_REF.fullmatch(value[1:]):
            return value[1:]
        match = _TRIGGER_REF.fullmatch(value)
        if match:
            kind, ref = match.groups()
            return {_TRIGGER_KIND[kind]: ref}  # run fields are checked by TriggerSpec
        if _TRIGGER_EMBEDDED.search(value):
            ctx.problem(
                path,
                f"{value!r}: a ${{trigger...}} reference must be the whole value "
                "(write $${...} for literal text)",
            )
        return value
    if isinstance(value, dict):
        if len(value) == 1 and next(iter(value)) in (*REF_KEYS, "$run"):
            return {"$value": value}
        return {k: _trigger_binding(ctx, v, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_trigger_binding(ctx, v, f"{path}[{i}]") for i, v in enumerate(value)]
    return value

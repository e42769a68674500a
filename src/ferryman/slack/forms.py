"""The modal launch form (``/ferryman launch <pipeline>``): generated from
the pipeline's parameter JSON Schema, validated on the server like any run's
parameters, with each error shown under its field in the modal."""

from __future__ import annotations

import json
from typing import Any

from ferryman.domain.params import ParamsInvalid, json_schema, validate_params
from ferryman.domain.spec import PipelineSpec
from ferryman.services.catalog import latest, resolve_name
from ferryman.settings import Settings
from ferryman.slack.grammar import GrammarError
from ferryman.store.engine import Store

CALLBACK_ID = "ferryman_launch"
_ACTION = "value"
_MAX_FIELDS = 40  # Slack allows 100 blocks in a modal; keep it usable
_TEXT_TYPES = ("string",)


def _block_id(name: str) -> str:
    return f"p_{name}"


def _spec(store: Store, settings: Settings, pipeline: str) -> tuple[str, PipelineSpec]:
    if not pipeline:
        raise GrammarError("name the pipeline: `/ferryman launch <pipeline>`")
    ns, _, bare = pipeline.rpartition("/")
    ns = ns or settings.slack.namespace
    with store.read() as conn:
        name = resolve_name(conn, ns, bare)
        return f"{ns}/{name}", latest(conn, ns, name).spec


def _types(prop: dict[str, Any]) -> list[str]:
    if "type" in prop:
        return [str(prop["type"])]
    return [str(p.get("type")) for p in prop.get("anyOf", []) if p.get("type") != "null"]


def _field(name: str, prop: dict[str, Any], required: bool) -> dict[str, Any]:
    label = {"type": "plain_text", "text": name[:75]}
    types = _types(prop)
    enum = prop.get("enum") or next(
        (p.get("enum") for p in prop.get("anyOf", []) if p.get("enum")), None
    )
    element: dict[str, Any]
    if enum or types == ["boolean"]:
        options = enum if enum else [True, False]
        element = {
            "type": "static_select",
            "action_id": _ACTION,
            "options": [
                {"text": {"type": "plain_text", "text": json.dumps(o)[:75]}, "value": json.dumps(o)}
                for o in options[:100]
            ],
        }
        if "default" in prop and prop["default"] is not None:
            d = json.dumps(prop["default"])
            element["initial_option"] = {"text": {"type": "plain_text", "text": d[:75]}, "value": d}
    else:
        element = {"type": "plain_text_input", "action_id": _ACTION}
        if types and types[0] not in _TEXT_TYPES:
            element["multiline"] = types[0] in ("object", "array")
        default = prop.get("default")
        if default is not None:
            element["initial_value"] = default if isinstance(default, str) else json.dumps(default)
    hint = " or ".join(types) or "any JSON"
    if prop.get("description"):
        hint += f" — {prop['description']}"
    return {
        "type": "input",
        "block_id": _block_id(name),
        "optional": not required,
        "label": label,
        "hint": {"type": "plain_text", "text": hint[:150]},
        "element": element,
    }


def launch_view(store: Store, settings: Settings, pipeline: str, channel: str) -> dict[str, Any]:
    """The modal for ``pipeline``'s parameters (``views.open``)."""
    full, spec = _spec(store, settings, pipeline)
    schema = json_schema(spec)
    required = set(schema.get("required", []))
    props: dict[str, Any] = schema.get("properties", {})
    blocks = [_field(n, p, n in required) for n, p in list(props.items())[:_MAX_FIELDS]]
    if not blocks:
        blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "No parameters."}}]
    return {
        "type": "modal",
        "callback_id": CALLBACK_ID,
        "title": {"type": "plain_text", "text": "Start a run"[:24]},
        "submit": {"type": "plain_text", "text": "Run"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "private_metadata": json.dumps({"pipeline": full, "channel": channel}),
        "blocks": blocks,
    }


def _value(raw: dict[str, Any], types: list[str]) -> Any:
    if raw.get("selected_option"):
        return json.loads(raw["selected_option"]["value"])
    text = raw.get("value")
    if text is None or text == "":
        return None
    if types and types[0] in _TEXT_TYPES:
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text  # the validation says what is wrong with it


def read_submission(
    store: Store, settings: Settings, view: dict[str, Any]
) -> tuple[str, str, dict[str, Any], dict[str, str]]:
    """(pipeline, channel, parameters, errors by block id) of a submitted form."""
    meta = json.loads(view.get("private_metadata") or "{}")
    pipeline, channel = str(meta.get("pipeline", "")), str(meta.get("channel", ""))
    try:
        _, spec = _spec(store, settings, pipeline)
    except Exception as exc:  # the pipeline went away meanwhile
        message = getattr(exc, "message", str(exc))
        first = next(iter((view.get("state") or {}).get("values") or {}), "p_")
        return pipeline, channel, {}, {first: str(message)[:150]}
    props = json_schema(spec).get("properties", {})
    values: dict[str, Any] = (view.get("state") or {}).get("values") or {}
    params: dict[str, Any] = {}
    for block_id, actions in values.items():
        name = block_id.removeprefix("p_")
        if name in props and _ACTION in actions:
            value = _value(actions[_ACTION], _types(props[name]))
            if value is not None:
                params[name] = value
    errors: dict[str, str] = {}
    try:
        validate_params(spec, params)
    except ParamsInvalid as exc:
        for e in exc.errors:
            block = _block_id(e.path.split(".")[0].split("[")[0]) if e.path else ""
            if block not in values:
                block = next(iter(values), _block_id(e.path or "x"))
            errors[block] = (errors.get(block, "") + " " + e.reason).strip()[:150]
    return pipeline, channel, params, errors

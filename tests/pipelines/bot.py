"""A scheduled "bot" whose configuration is a json_config parameter."""

from __future__ import annotations

from typing import Any

from ferryman import Param, pipeline, step

CONFIG_SCHEMA = {
    "type": "object",
    "required": ["action"],
    "properties": {
        "action": {"enum": ["post_summary", "refresh_cache"]},
        "channel": {"type": "string"},
        "limit": {"type": "integer", "minimum": 1},
    },
    "additionalProperties": False,
}


@step(infrastructure="inline")
def act(config: dict[str, Any]) -> str:
    return f"did {config['action']}"


@pipeline
def bot(config: dict = Param(schema=CONFIG_SCHEMA)) -> None:  # type: ignore[type-arg]
    act(config)

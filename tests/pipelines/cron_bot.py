"""A bot for the CronJob export tests: a secret, a json_config, a timeout;
the action ``fail`` makes the run fail."""

from __future__ import annotations

import os
from typing import Any

from ferryman import Param, pipeline, step

SCHEMA = {
    "type": "object",
    "required": ["action"],
    "properties": {"action": {"enum": ["report", "fail"]}},
}


@step(secrets=["CAST_API_KEY"])
def act(config: dict[str, Any]) -> str:
    if not os.environ.get("CAST_API_KEY"):
        raise RuntimeError("CAST_API_KEY is not set")
    if config["action"] == "fail":
        raise RuntimeError("the API said no")
    return "reported"


@pipeline(timeout=120)
def cron_bot(config: dict = Param(schema=SCHEMA)) -> None:  # type: ignore[type-arg]
    act(config)

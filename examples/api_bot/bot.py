"""A scheduled API bot: read a JSON config, fetch the open incidents of a
project from an HTTP API with a secret key, and post a digest to a channel
of the same API (or, with ``"action": "report"``, return it as the run's
output without posting).

It replaces a container with a JSON config and a Kubernetes CronJob: the
config is the ``config`` parameter (checked against ``CONFIG_SCHEMA`` before
anything runs), the key is the secret ``STATUS_API_KEY`` (declared on the
steps that send it), and the schedule is declared on the pipeline with the
``bot.json`` next to this file as its parameters.

Run it:  ferryman run examples/api_bot/bot.py:api_bot -p config=@examples/api_bot/bot.json
(see examples/api_bot/README.md)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any

from ferryman import Param, pipeline, secret, step
from ferryman.dsl.schedules import cron
from ferryman.http import api_call

KEY = "STATUS_API_KEY"
ACTIONS = ("post_digest", "report")

CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["api_url", "action", "project"],
    "properties": {
        "api_url": {"type": "string", "pattern": "^https?://"},
        "action": {"enum": list(ACTIONS)},
        "project": {"type": "string", "minLength": 1},
        "channel": {"type": "string", "minLength": 1},
        "max_items": {"type": "integer", "minimum": 1, "maximum": 50},
    },
    # A misspelt key is an error, not a setting silently ignored.
    "additionalProperties": False,
    "if": {"properties": {"action": {"const": "post_digest"}}},
    "then": {"required": ["channel"]},
}


def _call(method: str, url: str, **options: Any) -> Any:
    """One API call with the key in ``X-Api-Key``; the JSON answer.

    ``api_call`` already retries what is safe to retry (a connection that
    never opened; a GET, or a POST with an idempotency key, after a timeout,
    a 5xx or a 429), so the steps have no retries of their own: a 401 or a
    bad config fails the run at once instead of three times."""
    answer = api_call(
        method, url, secret=secret(KEY), secret_header="X-Api-Key", auth_scheme="",
        timeout=20, **options,
    )  # fmt: skip
    return answer.json()


@step(secrets=[KEY], timeout=60)
def fetch_incidents(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The project's open incidents, newest first (a GET: retried when safe)."""
    items: list[dict[str, Any]] = _call(
        "GET", f"{config['api_url']}/v1/projects/{config['project']}/incidents",
        params={"state": "open"},
    )  # fmt: skip
    print(f"{len(items)} open incident(s) in {config['project']}")
    return items


@step(infrastructure="inline")
def digest(config: dict[str, Any], incidents: list[dict[str, Any]]) -> str:
    """The digest text: a count and the first ``max_items`` titles."""
    shown = incidents[: config.get("max_items", 5)]
    lines = [f"{config['project']}: {len(incidents)} open incident(s)"]
    lines += [f"- [{i.get('severity', '?')}] {i['title']}" for i in shown]
    if len(incidents) > len(shown):
        lines.append(f"... and {len(incidents) - len(shown)} more")
    return "\n".join(lines)


@step(secrets=[KEY], timeout=60)
def deliver(config: dict[str, Any], text: str) -> dict[str, Any]:
    """Act on the config's action: post the digest, or only report it."""
    action = config["action"]
    if action == "report":
        return {"action": action, "posted": False, "digest": text}
    if action != "post_digest":
        # The schema already refuses this; a bot must never exit 0 doing nothing.
        raise ValueError(f"config.action: unknown action {action!r} (known: {', '.join(ACTIONS)})")
    # The same digest is posted once even if this POST is retried.
    key = hashlib.sha256(f"{config['channel']}\n{text}".encode()).hexdigest()[:32]
    answer = _call(
        "POST", f"{config['api_url']}/v1/channels/{config['channel']}/messages",
        json={"text": text}, idempotency_key=f"digest-{key}",
    )  # fmt: skip
    print(f"posted the digest to {config['channel']}: message {answer.get('id')}")
    return {"action": action, "posted": True, "message_id": answer.get("id"), "digest": text}


def _bot_json() -> dict[str, Any]:
    """The ``bot.json`` next to this file: the declared schedule's config."""
    loaded: dict[str, Any] = json.loads((Path(__file__).parent / "bot.json").read_text())
    return loaded


@pipeline(
    timeout=300,
    schedules=[
        cron("0 8 * * 1-5", timezone="Europe/London", name="api-bot-weekday",
             params={"config": _bot_json()}),
    ],
)  # fmt: skip
def api_bot(
    config: Annotated[dict[str, Any], Param(schema=CONFIG_SCHEMA, description="the JSON config")],
) -> None:
    """Fetch the open incidents, build a digest, post it (or report it)."""
    incidents = fetch_incidents(config)
    deliver(config, digest(config, incidents))

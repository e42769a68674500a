"""The ``slack`` format: a Slack incoming-webhook message."""

from __future__ import annotations

from typing import Any

from ferryman.notify.formats.base import FormatContext

_ICON = {
    "RunSucceeded": ":white_check_mark:",
    "NodeSucceeded": ":white_check_mark:",
    "RunFailed": ":x:",
    "NodeFailed": ":x:",
    "RunCancelled": ":no_entry_sign:",
    "NodeCancelled": ":no_entry_sign:",
    "NodeRetrying": ":repeat:",
    "RunRunning": ":arrow_forward:",
    "NodeRunning": ":arrow_forward:",
    "NodeWaiting": ":hourglass_flowing_sand:",
}


def _esc(text: str) -> str:
    """Slack's mrkdwn escapes: a message cannot inject mentions or links."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def summary(event: dict[str, Any]) -> str:
    """One line: what happened to which run or step."""
    what = f"{event['namespace']}/{event['pipeline']}"
    if event.get("node"):
        what += f" step {event['node']}"
        if event.get("attempt"):
            what += f" (attempt {event['attempt']})"
    return f"{event['type']}: {what}, run {event['run_id']}"


class SlackFormat:
    """A short mrkdwn message with a link to the run."""

    name = "slack"
    content_type = "application/json"

    def accepts(self, event_type: str) -> bool:
        """Every event type (filter by type in the subscription)."""
        return True

    def render(self, event: dict[str, Any], ctx: FormatContext) -> dict[str, Any]:
        """``{"text": …}`` plus one section block and a context line."""
        icon = _ICON.get(event["type"], ":information_source:")
        line = f"{icon} {_esc(summary(event))}"
        text = line + (f"\n{_esc(event['message'])}" if event.get("message") else "")
        return {
            "text": text,
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": text}},
                {
                    "type": "context",
                    "elements": [
                        {
                            "type": "mrkdwn",
                            "text": f"<{ctx.run_url(event['run_id'])}|run {event['run_id']}>"
                            f" · event {event['id']}",
                        }
                    ],
                },
            ],
        }

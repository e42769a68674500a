"""The ``teams`` format: a Microsoft Teams (Office 365 connector) MessageCard."""

from __future__ import annotations

from typing import Any

from ferryman.notify.formats.base import FormatContext
from ferryman.notify.formats.slack import summary

_COLOR = {"Succeeded": "2EB67D", "Failed": "E01E5A", "Cancelled": "ECB22E"}


class TeamsFormat:
    """A MessageCard with the event's facts and a link to the run."""

    name = "teams"
    content_type = "application/json"

    def accepts(self, event_type: str) -> bool:
        """Every event type (filter by type in the subscription)."""
        return True

    def render(self, event: dict[str, Any], ctx: FormatContext) -> dict[str, Any]:
        """The card: title, message, facts, and an ``OpenUri`` action."""
        color = next((c for k, c in _COLOR.items() if event["type"].endswith(k)), "4A90E2")
        facts = [
            {"name": "Event", "value": event["type"]},
            {"name": "Pipeline", "value": f"{event['namespace']}/{event['pipeline']}"},
            {"name": "Version", "value": event.get("pipeline_version") or ""},
            {"name": "Run", "value": event["run_id"]},
        ]
        if event.get("node"):
            facts.append({"name": "Step", "value": event["node"]})
        if event.get("attempt"):
            facts.append({"name": "Attempt", "value": str(event["attempt"])})
        facts.append({"name": "Event id", "value": event["id"]})
        return {
            "@type": "MessageCard",
            "@context": "https://schema.org/extensions",
            "themeColor": color,
            "summary": summary(event),
            "title": summary(event),
            "text": event.get("message") or "",
            "sections": [{"facts": facts}],
            "potentialAction": [
                {
                    "@type": "OpenUri",
                    "name": "Open run",
                    "targets": [{"os": "default", "uri": ctx.run_url(event["run_id"])}],
                }
            ],
        }

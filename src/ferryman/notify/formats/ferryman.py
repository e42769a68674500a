"""The ``ferryman`` format: the event envelope itself (SPEC §4)."""

from __future__ import annotations

from typing import Any

from ferryman.notify.formats.base import FormatContext


class FerrymanFormat:
    """Every event, as ferryman's own JSON envelope."""

    name = "ferryman"
    content_type = "application/json"

    def accepts(self, event_type: str) -> bool:
        """Every event type."""
        return True

    def render(self, event: dict[str, Any], ctx: FormatContext) -> dict[str, Any]:
        """The envelope unchanged."""
        return event

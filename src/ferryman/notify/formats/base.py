"""What a payload format is (``Format``) and what it may use besides the
event (``FormatContext``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class FormatContext:
    """What a format may need besides the event: links to the server."""

    base_url: str = "http://127.0.0.1:8787"

    def run_url(self, run_id: str) -> str:
        """A link to the run in the REST API."""
        return f"{self.base_url.rstrip('/')}/runs/{run_id}"


#: The content type of a format that declares none: bodies are sent as JSON.
JSON = "application/json"


@runtime_checkable
class Format(Protocol):
    """A payload format.

    Besides these members a format should declare ``content_type`` (the
    ``Content-Type`` of its bodies, a JSON type: they are sent JSON-encoded;
    ``JSON`` when absent), and ``carries_event_id = False`` when its body has
    no room for the event's id (every delivery also carries it in the
    ``webhook-id`` header). The contract suite (``tests/contract/test_formats.py``)
    checks every registered format against these rules.
    """

    name: str

    def accepts(self, event_type: str) -> bool:
        """Whether events of this type have an equivalent in this format."""
        ...

    def render(self, event: dict[str, Any], ctx: FormatContext) -> dict[str, Any]:
        """The JSON body for ``event`` (the envelope as a dict)."""
        ...


def content_type(fmt: Format) -> str:
    """The ``Content-Type`` of ``fmt``'s bodies (``JSON`` unless it declares one)."""
    return str(getattr(fmt, "content_type", JSON))

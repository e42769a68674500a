"""Following a run's log stream: a ``text/event-stream`` parser, and the state
of one ``follow_logs`` call shared by both clients (where to resume, when to
give up)."""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx

from ferryman.api.schemas import LogLinePublic
from ferryman.client.calls import Params, query, segment
from ferryman.client.errors import ApiError, transport_error

#: The server sends a keep-alive at least every 15 s on a log stream.
STREAM_READ_TIMEOUT = 60.0
#: Reconnections in a row without a new line before ``follow_logs`` gives up.
MAX_STREAM_RECONNECTS = 5


@dataclass
class SseEvent:
    """One server-sent event."""

    event: str = "message"
    data: list[str] = field(default_factory=list)
    id: str | None = None


class SseParser:
    """Turns the lines of a ``text/event-stream`` into events."""

    def __init__(self) -> None:
        self._cur = SseEvent()

    def feed(self, line: str) -> SseEvent | None:
        """The event that ``line`` completes, if any."""
        if not line:
            ev, self._cur = self._cur, SseEvent()
            return ev if (ev.data or ev.event != "message") else None
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._cur.data.append(value)
        elif name == "event":
            self._cur.event = value
        elif name == "id":
            self._cur.id = value
        return None


class LogFollow:
    """One ``follow_logs`` call: its request, the last line seen (sent back as
    ``Last-Event-ID`` on a reconnection) and the reconnections that failed."""

    def __init__(self, run_id: str, step: str | None, after: int, reconnect: bool) -> None:
        self.path = f"/runs/{segment(run_id)}/logs/stream"
        self.params: Params | None = query(step=step, after=after) or None
        self.reconnect = reconnect
        self.last = after
        self.failures = 0

    def headers(self) -> dict[str, str]:
        """The headers of the next connection (before authentication)."""
        resume = {"Last-Event-ID": str(self.last)} if self.last else {}
        return {"Accept": "text/event-stream", **resume}

    def line(self, ev: SseEvent) -> LogLinePublic | None:
        """The log line ``ev`` carries, if any; a line also resets the failures."""
        if not ev.data:
            return None
        line = LogLinePublic.model_validate_json("\n".join(ev.data))
        self.last, self.failures = line.id, 0
        return line

    def retry_delay(self, exc: httpx.TransportError | None) -> float:
        """Seconds to wait before reconnecting after the connection failed
        (``exc``) or the stream ended without its ``end`` event; raises
        ``ApiError`` instead when reconnecting is off or has failed too often."""
        if not self.reconnect or self.failures >= MAX_STREAM_RECONNECTS:
            if exc is not None:
                raise transport_error(exc) from None
            raise ApiError(0, "connection_error", "the log stream ended early")
        self.failures += 1
        return min(0.25 * 2.0**self.failures, 5.0)

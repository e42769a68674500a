"""The HTTP/1.1 protocol ``ferryman server`` speaks: uvicorn's (httptools),
plus the limits uvicorn lacks: two deadlines and a size for request heads.

uvicorn closes idle keep-alive connections, but a client that sends its
request head a byte at a time — or opens a connection and says nothing, or
trickles a body — is held open for ever: a thousand such clients held a
thousand connections. Here:

- a request head must be complete within ``header_timeout`` seconds of the
  connection (first request) or of its first byte (later requests on a
  keep-alive connection); otherwise the client gets ``408`` and is closed;
- a request body must be complete within ``body_timeout`` seconds of its
  head; otherwise the connection is closed (the route sees a disconnect);
- a request head (request line and headers) may hold ``MAX_HEAD_BYTES``;
  past that the client gets ``431`` and is closed (httptools sets no limit:
  a client could fill the server's memory with one endless header).

Idle keep-alive connections are uvicorn's ``timeout_keep_alive``; the number
of connections and requests at once is its ``limit_concurrency`` (503 past
it). ``ferryman.server`` sets all four from the settings.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

#: The largest request head (request line and headers) accepted, in bytes.
MAX_HEAD_BYTES = 64 * 1024


def _answer(status: bytes, text: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"content-length: " + str(len(text)).encode() + b"\r\nconnection: close\r\n\r\n" + text
    )


_TIMEOUT_408 = _answer(b"408 Request Timeout", b"request head too slow")
_TOO_LARGE_431 = _answer(b"431 Request Header Fields Too Large", b"request head too large")


class _HeadTooLarge(Exception):
    """Raised from a parser callback: httptools stops, uvicorn answers 400 (made 431)."""


class DeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with deadlines for request heads and bodies
    (set on a subclass by ``with_deadlines``)."""

    header_timeout: float = 10.0
    body_timeout: float = 60.0

    _deadline: asyncio.TimerHandle | None = None
    _phase: Literal["head", "body"] = "head"
    _head_bytes = 0
    _head_too_large = False

    def _count_head(self, n: int) -> None:
        self._head_bytes += n
        if self._head_bytes > MAX_HEAD_BYTES:
            self._head_too_large = True
            raise _HeadTooLarge

    def _arm(self, phase: Literal["head", "body"]) -> None:
        self._disarm()
        self._phase = phase
        seconds = self.header_timeout if phase == "head" else self.body_timeout
        self._deadline = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.transport is None or self.transport.is_closing():
            return
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        log.info("closing the connection of %s: request %s too slow", client, self._phase)
        idle = self.cycle is None or self.cycle.response_complete
        if self._phase == "head" and idle:  # nobody else is answering on it
            self.transport.write(_TIMEOUT_408)
        self.transport.close()

    # -- uvicorn's protocol, with the deadlines -------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm("head")  # a new connection must say something, in time

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        if self._deadline is None:  # the next request on a keep-alive connection
            self._arm("head")

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)
        super().on_header(name, value)

    def send_400_response(self, msg: str) -> None:
        if not self._head_too_large:
            super().send_400_response(msg)
            return
        self.transport.write(_TOO_LARGE_431)
        self.transport.close()

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._arm("body")  # disarmed at once by on_message_complete when there is none

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()


def with_deadlines(header_timeout: float, body_timeout: float) -> type[DeadlineProtocol]:
    """The protocol class to give ``uvicorn.Config(http=...)``."""
    return type(
        "DeadlineProtocol",
        (DeadlineProtocol,),
        {"header_timeout": header_timeout, "body_timeout": body_timeout},
    )

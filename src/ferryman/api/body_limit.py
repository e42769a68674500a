"""The largest request body the API reads: ``FERRYMAN_HTTP_MAX_BODY_BYTES``.

An ASGI middleware in front of everything else (the input guard reads whole
bodies, FastAPI parses them): a ``Content-Length`` past the limit is
answered ``413`` before a byte of the body is read; a body sent without one
(chunked) is counted as it streams in, and the request fails with ``413``
as soon as the count passes the limit, so no more than the limit plus one
chunk is ever held in memory.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ferryman.api.errors import error_body


def _message(limit: int, size: int | None = None) -> str:
    sent = f" ({size} bytes)" if size is not None else ""
    return (
        f"the request body{sent} is larger than the limit of {limit} bytes "
        "(FERRYMAN_HTTP_MAX_BODY_BYTES)"
    )


class BodyTooLarge(HTTPException):
    """The body streamed past the limit (raised from ``receive``). An HTTP
    exception: FastAPI passes those on as they are from its body parsing
    (anything else there becomes a 400), and the API answers it as a 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, _message(limit), headers={"Connection": "close"})


class BodyLimit:
    """ASGI middleware: ``413`` for a request body larger than ``limit`` bytes."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            await self._refuse(scope, receive, send, declared)
            return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if started:  # nothing sensible left to answer with
                raise
            await self._refuse(scope, receive, send, None)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, size: int | None) -> None:
        response = JSONResponse(
            error_body(
                "too_large",
                _message(self.limit, size),
                [{"path": "body", "reason": f"larger than {self.limit} bytes"}],
            ),
            status_code=413,
            # The rest of the body is not read: the connection cannot be reused.
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None

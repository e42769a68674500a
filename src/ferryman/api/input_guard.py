"""One guard at the edge for values no database keeps: lone UTF-16
surrogates (``"\\ud800"`` in JSON), NUL characters, and numbers that are not
finite (``NaN``, ``Infinity``, ``1e400``).

Such a value used to get through the routes: a run whose params held a lone
surrogate was stored on SQLite and then broke every run list that showed it
(500s for everyone); PostgreSQL refused the insert with a 500. This ASGI
middleware checks every request before routing — the JSON body of every
route (a body without ``Content-Type`` too, as FastAPI reads that as JSON),
the query string, the path and the headers — and answers 422 in the API's
error shape, with the path of the bad value (``params.note``,
``query.namespace``, ``header.x-trace``, ``path``).

It costs little: a body is parsed and walked only when a byte-level scan
finds something that could be such a value (a ``\\u`` escape of a
surrogate or NUL, ``NaN``, ``Infinity``, a three-digit exponent or a very
long number); other bodies pass untouched (the bytes are replayed as read).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ferryman.api.errors import error_body

SURROGATE = "a lone surrogate (\\ud800-\\udfff) is not a character: send valid Unicode"
NUL = "contains a NUL character"
NOT_FINITE = "numbers must be finite: no NaN, Infinity or overflowing values such as 1e400"
TOO_DEEP = "the JSON document is nested too deeply"

# Anything that might parse to a bad value; most bodies match none of it.
_SUSPECT = re.compile(rb"\\u(?:[dD][89a-fA-F]|0000)|NaN|Infinity|[0-9][eE][+-]?[0-9]{3}|[0-9]{200}")
_JSON_TYPE = re.compile(r"^\s*application/(?:[\w.+-]*\+)?json\s*(?:;|$)", re.I)


def string_problem(text: str) -> str | None:
    """Why ``text`` cannot be stored, or None."""
    if "\x00" in text:
        return NUL
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return SURROGATE
    return None


def _shown(key: str) -> str:
    """A key as it can be shown in an answer (lone surrogates escaped)."""
    return key.encode("utf-8", "backslashreplace").decode("utf-8")


def json_problems(document: Any) -> Iterator[tuple[str, str]]:
    """(path, reason) of every bad value in a parsed JSON document."""
    stack: list[tuple[tuple[str, ...], Any]] = [((), document)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            reason = string_problem(value)
        elif isinstance(value, float):
            reason = None if math.isfinite(value) else NOT_FINITE
        elif isinstance(value, dict):
            reason = None
            for key, item in reversed(list(value.items())):
                key_reason = string_problem(key)
                if key_reason is not None:
                    yield ".".join((*path, _shown(key))), key_reason
                stack.append(((*path, _shown(key)), item))
        elif isinstance(value, list):
            reason = None
            stack.extend(((*path, str(i)), item) for i, item in reversed(list(enumerate(value))))
        else:
            reason = None
        if reason is not None:
            yield ".".join(path) or "body", reason


def body_problems(body: bytes) -> list[dict[str, str]]:
    """The bad values of a JSON request body (none for one that is not JSON:
    FastAPI answers that itself)."""
    if not _SUSPECT.search(body):
        return []
    try:
        document = json.loads(body)
    except RecursionError:
        return [{"path": "body", "reason": TOO_DEEP}]
    except ValueError:  # not JSON, or not UTF-8: the route's own 422
        return []
    return [{"path": p, "reason": r} for p, r in json_problems(document)]


def target_problems(scope: Scope) -> list[dict[str, str]]:
    """Bad values in the path, the query string and the headers."""
    problems = []
    reason = string_problem(scope.get("path", ""))
    if reason is not None:
        problems.append({"path": "path", "reason": reason})
    query: bytes = scope.get("query_string", b"")
    if b"%00" in query or b"\x00" in query:
        for key, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            reason = string_problem(key) or string_problem(value)
            if reason is not None:
                problems.append({"path": f"query.{_shown(key)}", "reason": reason})
    for name, raw in scope.get("headers", ()):
        if b"\x00" in raw:
            problems.append({"path": f"header.{name.decode('latin-1')}", "reason": NUL})
    return problems


def _json_body_expected(scope: Scope) -> bool:
    content_type = None
    length = None
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            content_type = value.decode("latin-1")
        elif name == b"content-length":
            length = value
    if length == b"0":
        return False
    # FastAPI parses a body without Content-Type as JSON.
    return content_type is None or bool(_JSON_TYPE.match(content_type))


class InputGuard:
    """ASGI middleware: 422 for requests carrying values no database keeps."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        problems = target_problems(scope)
        if problems:
            await _refuse(problems, scope, receive, send)
            return
        if not _json_body_expected(scope):
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left: let the app see it
                await self.app(scope, _replay([message], receive), send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        problems = body_problems(body)
        if problems:
            await _refuse(problems, scope, receive, send)
            return
        request: Message = {"type": "http.request", "body": body, "more_body": False}
        await self.app(scope, _replay([request], receive), send)


def _replay(first: list[Message], receive: Receive) -> Receive:
    pending = list(first)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


async def _refuse(
    problems: list[dict[str, str]], scope: Scope, receive: Receive, send: Send
) -> None:
    n = len(problems)
    response = JSONResponse(
        error_body("invalid", f"{n} input error(s): a value no database can store", problems),
        status_code=422,
    )
    await response(scope, receive, send)

"""The bot's command grammar: a message's text into a ``Command``.

``run <pipeline>`` then a code block of JSON parameters (comments and
trailing commas tolerated), or ``run <pipeline> b64_<base64 JSON>`` (the
form ``/remind`` carries; a trailing ``.`` is tolerated). Slack's link
formatting (``<https://x>``, ``<https://x|label>``, ``<mailto:a@b|a@b>``) is
unwrapped to the plain value everywhere, parameters included. Pure Python:
no Slack, no database.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

#: ``<@U123>`` mentions (the bot's own, at the start of a mention's text)
_MENTION = re.compile(r"<@[A-Z0-9]+(?:\|[^>]*)?>")
#: Slack's link formatting: ``<url>``, ``<url|label>``, ``<mailto:x|x>``, ``<#C1|name>``
_LINK = re.compile(r"<((?:https?|mailto|ftp|gs|s3|tel):[^<>|\s]*)(?:\|[^<>]*)?>")
_CHANNEL = re.compile(r"<#([A-Z0-9]+)(?:\|[^<>]*)?>")
_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)
_B64 = re.compile(r"\bb64_(\S*)")
#: Characters Slack (or a phone) substitutes for what a person typed in JSON
_SMART = str.maketrans(
    {"\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2018": "'", "\u2019": "'", "\u00a0": " "}
)


class GrammarError(ValueError):
    """The text is not a command the bot understands; the message says why."""


@dataclass(frozen=True)
class Command:
    """A parsed command: its verb, its words, and its JSON parameters if any."""

    verb: str
    args: list[str] = field(default_factory=list)
    params: dict[str, Any] | None = None
    text: str = ""


def unwrap_links(text: str) -> str:
    """Slack's ``<https://x|label>`` forms as the plain value (``https://x``;
    ``mailto:a@b`` → ``a@b``), and HTML entities Slack escapes back."""

    def link(m: re.Match[str]) -> str:
        value = m.group(1)
        return value.removeprefix("mailto:")

    text = _LINK.sub(link, text)
    text = _CHANNEL.sub(lambda m: m.group(1), text)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _strip_comments(text: str) -> str:
    """JSON with ``//`` and ``/* */`` comments and trailing commas made strict,
    leaving strings alone."""
    out: list[str] = []
    i, n = 0, len(text)
    in_str = False
    while i < n:
        c = text[i]
        if in_str:
            out.append(c)
            if c == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 2
                continue
            if c == '"':
                in_str = False
            i += 1
            continue
        if c == '"':
            in_str = True
            out.append(c)
            i += 1
        elif text.startswith("//", i) or c == "#":
            while i < n and text[i] != "\n":
                i += 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
        elif c == ",":
            j = i + 1
            while j < n and text[j] in " \t\r\n":
                j += 1
            if j < n and text[j] in "}]":
                i += 1  # a trailing comma
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _unwrap_value(value: Any) -> Any:
    if isinstance(value, str):
        return unwrap_links(value)
    if isinstance(value, dict):
        return {unwrap_links(str(k)): _unwrap_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap_value(v) for v in value]
    return value


def tolerant_json(text: str) -> dict[str, Any]:
    """A JSON object from what a person pasted in Slack: comments, trailing
    commas and typographic quotes tolerated, links unwrapped in every string.
    ``GrammarError`` says where it is not JSON."""
    cleaned = _strip_comments(text.translate(_SMART)).strip()
    if not cleaned:
        return {}
    try:
        value = json.loads(cleaned)
    except json.JSONDecodeError as exc:
        raise GrammarError(
            f"the parameters are not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None
    if not isinstance(value, dict):
        raise GrammarError("the parameters must be a JSON object ({...})")
    return dict(_unwrap_value(value))


def decode_b64(token: str) -> dict[str, Any]:
    """The JSON object carried by a ``b64_…`` payload (standard or URL-safe
    alphabet, padding optional)."""
    raw = token.rstrip(".")
    padded = raw + "=" * (-len(raw) % 4)
    try:
        data = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
        text = data.decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise GrammarError("the b64_ payload is not base64 of UTF-8 JSON") from None
    return tolerant_json(text)


def encode_b64(params: dict[str, Any]) -> str:
    """The ``b64_…`` form of ``params`` (URL-safe: no ``+``/``/`` to confuse
    Slack), as ``create_recurring`` writes it."""
    raw = json.dumps(params, separators=(",", ":"), ensure_ascii=False).encode()
    return "b64_" + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def parse(text: str) -> Command:
    """Parse a mention's or a slash command's text (the bot's mention removed)."""
    text = _MENTION.sub(" ", text).strip()
    params: dict[str, Any] | None = None
    fence = _FENCE.search(text)
    if fence:
        params = tolerant_json(fence.group(1))
        text = (text[: fence.start()] + " " + text[fence.end() :]).strip()
    b64 = _B64.search(text)
    if b64:
        if params is not None:
            raise GrammarError("give the parameters once: a code block or a b64_ payload")
        params = decode_b64(b64.group(1))
        text = (text[: b64.start()] + " " + text[b64.end() :]).strip()
    text = unwrap_links(text.translate(_SMART))
    if params is None and "{" in text:
        # JSON written inline, without a code block
        start = text.index("{")
        params = tolerant_json(text[start:])
        text = text[:start].strip()
    try:
        words = shlex.split(text)
    except ValueError:
        words = text.split()
    if not words:
        return Command("help", [], params, text)
    verb = words[0].lower().rstrip(":")
    return Command(verb, words[1:], params, text)

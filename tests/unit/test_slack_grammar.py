"""The Slack bot's grammar: tolerant JSON, Slack's link formatting, b64
payloads (table tests; pure Python)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from ferryman.slack.grammar import (
    GrammarError,
    decode_b64,
    encode_b64,
    parse,
    tolerant_json,
    unwrap_links,
)
from ferryman.slack.render import condense_tracebacks


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1}', {"a": 1}),
        ('{"a": 1,}', {"a": 1}),
        ('{"a": [1, 2, 3,],}', {"a": [1, 2, 3]}),
        (
            '{\n  // a comment\n  "a": 1, # another\n  /* block\n comment */ "b": 2\n}',
            {"a": 1, "b": 2},
        ),
        (
            '{"url": "http://x.example.com/a//b", "c": "/* not a comment */"}',
            {"url": "http://x.example.com/a//b", "c": "/* not a comment */"},
        ),
        ('{"s": "a, }"}', {"s": "a, }"}),
        ('{"nested": {"list": [{"k": "v",},],},}', {"nested": {"list": [{"k": "v"}]}}),
        ("{\u201ca\u201d: \u201cb\u201d}", {"a": "b"}),  # a phone's quotes
        ('{"escaped": "quote \\" , }"}', {"escaped": 'quote " , }'}),
        ("", {}),
    ],
)
def test_tolerant_json(text: str, expected: dict[str, Any]) -> None:
    assert tolerant_json(text) == expected


@pytest.mark.parametrize(
    ("text", "error"),
    [("[1, 2]", "JSON object"), ('{"a": }', "not JSON"), ('{"a": 1,,}', "not JSON")],
)
def test_tolerant_json_errors(text: str, error: str) -> None:
    with pytest.raises(GrammarError, match=error):
        tolerant_json(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<https://x.example.com>", "https://x.example.com"),
        (
            "<https://x.example.com/a?b=1&amp;c=2|x.example.com/a>",
            "https://x.example.com/a?b=1&c=2",
        ),
        ("<mailto:ann@example.com|ann@example.com>", "ann@example.com"),
        (
            "see <http://a.example.com|a> and <https://b.example.com>",
            "see http://a.example.com and https://b.example.com",
        ),
        ("<gs://bucket/path|gs://bucket/path>", "gs://bucket/path"),
        ("<#C123|general>", "C123"),
        ("a &lt; b &gt; c", "a < b > c"),
        ("plain", "plain"),
    ],
)
def test_unwrap_links(text: str, expected: str) -> None:
    assert unwrap_links(text) == expected


def test_links_unwrapped_anywhere_in_the_params() -> None:
    cmd = parse(
        'run x ```{"u": "<https://a.example.com|a>", "l": ["<mailto:b@example.com|b@example.com>"],'
        ' "n": {"<https://k.example.com>": "<https://v.example.com|v>"}}```'
    )
    assert cmd.params == {
        "u": "https://a.example.com",
        "l": ["b@example.com"],
        "n": {"https://k.example.com": "https://v.example.com"},
    }


@pytest.mark.parametrize("tail", ["", ".", " "])
@pytest.mark.parametrize("alphabet", ["standard", "urlsafe", "unpadded"])
def test_b64_payloads(tail: str, alphabet: str) -> None:
    params = {"day": "2024-01-01", "q": "a/b+c?>>", "n": [1, {"x": None}]}
    raw = json.dumps(params).encode()
    if alphabet == "standard":
        token = base64.b64encode(raw).decode()
    elif alphabet == "urlsafe":
        token = base64.urlsafe_b64encode(raw).decode()
    else:
        token = base64.b64encode(raw).decode().rstrip("=")
    cmd = parse(f"<@UBOT> run My-Pipeline b64_{token}{tail}")
    assert (cmd.verb, cmd.args, cmd.params) == ("run", ["My-Pipeline"], params)


def test_encode_b64_round_trips() -> None:
    params = {"a": "ü/+", "b": [1, 2]}
    token = encode_b64(params)
    assert token.startswith("b64_") and "+" not in token and "/" not in token
    assert decode_b64(token[4:] + ".") == params


def test_bad_b64_and_two_payloads() -> None:
    with pytest.raises(GrammarError, match="base64"):
        parse("run x b64_%%%")
    with pytest.raises(GrammarError, match="once"):
        parse('run x ```{"a": 1}``` b64_e30')


@pytest.mark.parametrize(
    ("text", "verb", "args"),
    [
        ("<@UBOT> status brave-otter-42", "status", ["brave-otter-42"]),
        ("<@UBOT>   LOGS run-1 step_a", "logs", ["run-1", "step_a"]),
        ("<@UBOT>", "help", []),
        ('<@UBOT> run x ```json\n{"a": 1}\n```', "run", ["x"]),
        ('<@UBOT> run x {"a": 1,}', "run", ["x"]),
    ],
)
def test_parse(text: str, verb: str, args: list[str]) -> None:
    cmd = parse(text)
    assert (cmd.verb, cmd.args) == (verb, args)


def test_condense_tracebacks() -> None:
    lines = [
        ("a", "starting"),
        ("a", "Traceback (most recent call last):"),
        ("a", '  File "x.py", line 1, in <module>'),
        ("a", "    boom()"),
        ("b", "other step"),
        ("a", "ValueError: bad"),
        ("a", "after"),
    ]
    assert condense_tracebacks(lines) == [
        ("a", "starting"),
        ("b", "other step"),
        ("a", "[traceback: 2 lines not shown]"),
        ("a", "ValueError: bad"),
        ("a", "after"),
    ]

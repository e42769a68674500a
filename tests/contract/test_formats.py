"""The contract every event format passes: the built-in ones and every one
registered in the ``ferryman.formats`` entry-point group.

A format renders each event type it accepts (``accepts`` False is how it
declares that it does not send a type, as KFP does), into a JSON-serialisable
body that depends on the event only (the same event, the same body; the event
itself untouched), which holds the event's id (or, for a format that declares
``carries_event_id = False``, the run's id) and never a header's value, with
its content type declared.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from types import SimpleNamespace
from typing import Any

import pytest

from ferryman.domain.events import EventEnvelope, EventType
from ferryman.notify.formats import Format, FormatContext, content_type, formats
from ferryman.notify.webhook import build_request, envelope

FORMATS = sorted(formats())
CTX = FormatContext(base_url="https://ferryman.example.com/")
SIGNING_SECRET = "whsec_" + "c2VjcmV0LXNpZ25pbmcta2V5LWZvci10ZXN0cw=="
HEADER_SECRET = "Bearer hdr-s3cr3t-value-42"

#: Messages a format must carry safely: plain, empty, markup and mentions.
MESSAGES = ["step 'load' failed: RuntimeError: connection refused", "", '<@here> & "co" é ✓']


def event_of(event_type: str, message: str = MESSAGES[0]) -> dict[str, Any]:
    """An event as the deliverer hands it to a format (``webhook.envelope`` of a row)."""
    node = event_type.startswith("Node")
    row = SimpleNamespace(
        id="01a20a8691e07d20a59097987a969999",
        seq=42,
        type=event_type,
        time=dt.datetime(2024, 5, 1, 12, 30, 5, 123456, tzinfo=dt.UTC),
        namespace="prod",
        pipeline="etl",
        pipeline_version="9f86d081884c7d65",
        run_id="01a20a8691e07d20a59097987a969932",
        node="load" if node else None,
        attempt=2 if node else None,
        message=message,
        labels={"team": "data"},
        data={"exit_code": 3, "nested": {"ok": False}} if node else {},
    )
    event = envelope(row)
    EventEnvelope.model_validate(event)  # the real envelope's shape
    return event


def fmt_of(name: str) -> Format:
    return formats()[name]


@pytest.mark.parametrize("name", FORMATS)
def test_declares_a_json_content_type(name: str) -> None:
    fmt = fmt_of(name)
    assert isinstance(fmt, Format)
    assert fmt.name == name
    declared = getattr(fmt, "content_type", None)
    assert isinstance(declared, str), f"{name} declares no content_type"
    media = declared.split(";")[0].strip()
    assert media == "application/json" or media.endswith("+json"), declared
    assert content_type(fmt) == declared


@pytest.mark.parametrize("name", FORMATS)
def test_sends_some_event_type(name: str) -> None:
    assert any(fmt_of(name).accepts(t.value) for t in EventType)


@pytest.mark.parametrize("message", MESSAGES, ids=["plain", "empty", "markup"])
@pytest.mark.parametrize("event_type", [t.value for t in EventType])
@pytest.mark.parametrize("name", FORMATS)
def test_renders_each_type_it_sends(name: str, event_type: str, message: str) -> None:
    fmt = fmt_of(name)
    if not fmt.accepts(event_type):
        pytest.skip(f"{name} does not send {event_type}")
    event = event_of(event_type, message)
    before = copy.deepcopy(event)
    body = fmt.render(event, CTX)
    assert event == before  # the event is not changed
    assert isinstance(body, dict)
    text = json.dumps(body, allow_nan=False, ensure_ascii=False)  # JSON-serialisable
    assert json.loads(text) == body
    # deterministic: the same event (another copy of it) gives the same body
    assert fmt.render(copy.deepcopy(before), CTX) == body
    assert fmt.render(event, CTX) == body
    if getattr(fmt, "carries_event_id", True):
        assert event["id"] in text, f"{name} leaves out the event id"
    else:
        assert event["run_id"] in text, f"{name} has neither the event id nor the run id"


@pytest.mark.parametrize("name", FORMATS)
def test_a_request_never_carries_secret_values_in_its_body(name: str) -> None:
    fmt = fmt_of(name)
    event_type = next(t.value for t in EventType if fmt.accepts(t.value))
    event = event_of(event_type)
    body, headers = build_request(
        secret=SIGNING_SECRET,
        fmt_name=name,
        extra_headers={"Authorization": HEADER_SECRET, "X-Api-Key": "k3y-" + HEADER_SECRET},
        event=event,
        ctx=CTX,
    )
    text = body.decode()
    assert HEADER_SECRET not in text and "hdr-s3cr3t" not in text
    assert SIGNING_SECRET not in text and SIGNING_SECRET.removeprefix("whsec_") not in text
    assert json.loads(text) == fmt.render(event, CTX)
    assert headers["content-type"] == content_type(fmt)
    assert headers["webhook-id"] == event["id"]  # the stable reference, in every format
    assert headers["Authorization"] == HEADER_SECRET  # (where it belongs)

"""Event webhooks: the ferryman envelope of an event, and one signed request.

The deliverer and the subscription test send build their requests here: the
event rendered in the subscription's format (``notify.formats``), signed
(Standard Webhooks, ``notify.signing``) with the event id as the stable
``webhook-id`` and a fresh timestamp per attempt.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ferryman.http import USER_AGENT
from ferryman.notify.formats import FormatContext, content_type, get_format
from ferryman.notify.signing import secret_key, signed_headers
from ferryman.redaction import SHAPES_ONLY
from ferryman.store.tables import new_id, utcnow


def envelope(row: Any) -> dict[str, Any]:
    """The ferryman envelope (SPEC §4) of an ``events`` row, JSON-ready; its
    message and data pass the redactor (token shapes; a step's declared
    secrets were masked when the worker recorded them)."""
    when = row.time
    return {
        "id": row.id,
        "seq": row.seq,
        "type": row.type,
        "time": when.isoformat().replace("+00:00", "Z") if when else None,
        "namespace": row.namespace,
        "pipeline": row.pipeline,
        "pipeline_version": row.pipeline_version,
        "run_id": row.run_id,
        "node": row.node,
        "attempt": row.attempt,
        "message": SHAPES_ONLY.text(row.message) if row.message else "",
        "labels": dict(row.labels or {}),
        "data": SHAPES_ONLY.value(dict(row.data)) if row.data else {},
    }


def build_request(
    *,
    secret: str,
    fmt_name: str,
    extra_headers: Mapping[str, str],
    event: dict[str, Any],
    ctx: FormatContext,
) -> tuple[bytes, dict[str, str]]:
    """The body and headers of one attempt: rendered, then signed with the event
    id as the stable ``webhook-id`` and a fresh timestamp. ferryman's user
    agent wins over one in ``extra_headers``."""
    fmt = get_format(fmt_name)
    body = json.dumps(fmt.render(event, ctx), separators=(",", ":"), ensure_ascii=False).encode()
    headers = {
        **extra_headers,
        "content-type": content_type(fmt),
        "user-agent": USER_AGENT,
        **signed_headers(secret_key(secret), event["id"], body),
    }
    return body, headers


def sample_event(
    event_type: str = "RunSucceeded", *, namespace: str = "default", pipeline: str = "example"
) -> dict[str, Any]:
    """A made-up event for ``subscriptions test`` (its ``data.test`` is true)."""
    node = "train" if event_type.startswith("Node") else None
    return {
        "id": new_id(),
        "seq": 0,
        "type": event_type,
        "time": utcnow().isoformat().replace("+00:00", "Z"),
        "namespace": namespace,
        "pipeline": pipeline,
        "pipeline_version": "1",
        "run_id": "0" * 32,
        "node": node,
        "attempt": 1 if node else None,
        "message": "test event sent by `ferryman subscriptions test`",
        "labels": {},
        "data": {"test": True},
    }

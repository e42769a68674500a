"""Bodies in the shape of the pipeline-run API ferryman replaces.

Its clients parse ``{"status": "ok"|"error", "response": {...}}``: the answer
to ``POST /{namespace}/pipelines/run/{name}/`` and the completion webhook of a
run started there (``RunOptions.webhook_format == "compat"``). The webhook
body is built from ferryman's completion report (``notify.report``), so it
carries the same redacted error excerpt, plus the step outputs that are URIs.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ferryman.redaction import SHAPES_ONLY
from ferryman.store.tables import nodes

#: The webhook format name stored in a run's options and its callback target.
COMPAT_FORMAT = "compat"
#: A URI as the old API reported them: a scheme, ``://`` and a rest (gs://, s3://, https://...).
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://\S+$")
_MAX_URIS = 100


def created_body(run: dict[str, Any], run_url: str) -> dict[str, Any]:
    """The 200 answer to a run created through the compatibility route."""
    return {
        "status": "ok",
        "response": {
            "message": "Pipeline run created successfully.",
            "name": run["name"],
            "run_id": run["id"],
            "run_url": run_url,
            "error_logs": "",
        },
    }


def error_body(message: str) -> dict[str, Any]:
    """A 400/503 answer: ``{"status": "error", "response": {"message": ...}}``."""
    return {"status": "error", "response": {"message": message}}


def _uris(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        if _URI.match(value):
            yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _uris(v)
    elif isinstance(value, list):
        for v in value:
            yield from _uris(v)


def output_uris(conn: Connection, run_id: str) -> list[str]:
    """The step outputs of a run that are URIs, in step order, each once."""
    rows = conn.execute(
        sa.select(nodes.c.output)
        .where(nodes.c.run_id == run_id, nodes.c.has_output.is_(True))
        .order_by(nodes.c.id)
    )
    seen: dict[str, None] = {}
    for (output,) in rows:
        for uri in _uris(output):
            seen.setdefault(SHAPES_ONLY.text(uri), None)
    return list(seen)[:_MAX_URIS]


def webhook_body(report: dict[str, Any], uris: list[str]) -> dict[str, Any]:
    """The old completion webhook body for a completion ``report``."""
    d = report["data"]
    ok = d["state"] == "succeeded"
    # the old API knew two outcomes: a cancelled run is not a success either
    message = "Run completed successfully." if ok else "Run failed."
    error = d.get("error") or ""
    if not ok and d.get("failed_step"):
        error = f"step {d['failed_step']!r} failed: {error}" if error else error
    return {
        "status": "ok" if ok else "error",
        "response": {
            "message": message,
            "run_id": d["run_id"],
            "run_url": d["links"]["ui"],
            "error_logs": "" if ok else error,
            "uris": uris,
            "webhook": True,
        },
    }

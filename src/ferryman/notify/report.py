"""The run-completion report: what a webhook receives and what Slack shows.

The report is built from the run's stored final state when a callback is
delivered (not when it was queued): a run is immutable once it has ended, so
every attempt of a callback sends byte-for-byte the same body.

Webhook body (Standard Webhooks' recommended envelope)::

    {"type": "run.succeeded" | "run.failed" | "run.cancelled",
     "timestamp": "<ended_at, ISO 8601>",
     "data": {"run_id", "namespace", "pipeline", "version", "state", "message",
              "created_at", "started_at", "ended_at", "duration_seconds",
              "failed_step", "error", "labels", "links": {"ui", "api"}}}

``error`` is an excerpt of at most ``ERROR_EXCERPT`` characters. Texts a step
produced (``message``, ``error``) pass the redactor (``ferryman.redaction``)
again: the worker masked the step's declared secrets when it recorded them,
and token shapes are masked here whatever recorded them. The Slack
text is short and never carries a traceback: only the last line of an error
that contains one (the exception itself), cut to ``SLACK_ERROR_EXCERPT``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ferryman.errors import NotFound
from ferryman.redaction import SHAPES_ONLY
from ferryman.settings import Settings
from ferryman.store.tables import events, runs

ERROR_EXCERPT = 2000
SLACK_ERROR_EXCERPT = 300

STATE_EMOJI = {
    "succeeded": ":white_check_mark:",
    "failed": ":x:",
    "cancelled": ":no_entry_sign:",
}


def run_links(settings: Settings, run_id: str) -> dict[str, str]:
    """Where a person (``ui``) and a program (``api``) find the run."""
    base = settings.base_url
    return {"ui": f"{base}/runs/{run_id}", "api": f"{base}/runs/{run_id}"}


def excerpt(text: str | None, limit: int = ERROR_EXCERPT) -> str | None:
    """``text`` cut to ``limit`` characters (an ellipsis marks the cut)."""
    if not text:
        return None
    text = text.strip()
    if len(text) <= limit:
        return text
    return text[: max(limit - 1, 0)].rstrip() + "…"


def one_line_error(text: str | None, limit: int = SLACK_ERROR_EXCERPT) -> str | None:
    """A one-line summary of an error: never a traceback.

    For a Python traceback the last non-empty line is the exception
    (``ValueError: bad input``); otherwise the first non-empty line is the
    headline.
    """
    if not text:
        return None
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return None
    traceback = any(ln.startswith("Traceback (most recent call last)") for ln in lines)
    line = lines[-1] if traceback else lines[0]
    return excerpt(line, limit)


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def build_report(conn: Connection, run_id: str, settings: Settings) -> dict[str, Any]:
    """The completion report of an ended run (see the module docstring)."""
    row = conn.execute(sa.select(runs).where(runs.c.id == run_id)).first()
    if row is None:
        raise NotFound(f"no run {run_id!r}")
    # The run's last own event carries the reason it ended (timeout, cancel
    # reason, "step 'x' failed: …"); nodes' events have a node name.
    message = conn.execute(
        sa.select(events.c.message)
        .where(events.c.run_id == run_id, events.c.node.is_(None))
        .order_by(events.c.seq.desc())
        .limit(1)
    ).scalar()
    start = row.started_at or row.created_at
    duration = (row.ended_at - start).total_seconds() if row.ended_at and start else None
    error = row.error if row.state == "failed" else None
    if row.state == "failed" and not error:
        error = message
    data = {
        "run_id": row.id,
        "namespace": row.namespace,
        "pipeline": row.pipeline,
        "version": row.version,
        "state": row.state,
        "message": SHAPES_ONLY.text(message or ""),
        "created_at": _iso(row.created_at),
        "started_at": _iso(row.started_at),
        "ended_at": _iso(row.ended_at),
        "duration_seconds": None if duration is None else round(duration, 3),
        "failed_step": row.failed_node if row.state == "failed" else None,
        "error": excerpt(SHAPES_ONLY.text(error)) if error else None,
        "labels": dict(row.labels or {}),
        "links": run_links(settings, row.id),
    }
    return {"type": f"run.{row.state}", "timestamp": _iso(row.ended_at), "data": data}


def human_duration(seconds: float | None) -> str:
    """``42s``, ``3m 05s``, ``2h 07m``."""
    if seconds is None:
        return "?"
    s = round(seconds)
    if s < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m {s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m"


def _slack_escape(text: str) -> str:
    """Slack's mrkdwn control characters (a message is never a link we did not make)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_text(report: dict[str, Any]) -> str:
    """The short Slack rendering of a completion report (one or two lines)."""
    d = report["data"]
    state = str(d["state"])
    emoji = STATE_EMOJI.get(state, ":grey_question:")
    name = _slack_escape(f"{d['namespace']}/{d['pipeline']}")
    head = (
        f"{emoji} *{name}* run `{d['run_id'][:12]}` {state} "
        f"in {human_duration(d['duration_seconds'])}"
    )
    if state == "failed" and d.get("failed_step"):
        step = _slack_escape(str(d["failed_step"]).replace("`", "'"))
        head += f" at step `{step}`"
    head += f" (<{d['links']['ui']}|details>)"
    why = one_line_error(d.get("error")) if state == "failed" else None
    if state == "cancelled" and d.get("message"):
        why = one_line_error(d["message"])
    return head if not why else f"{head}\n> {_slack_escape(why)}"

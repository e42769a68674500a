"""Schedules in the Python DSL: a pipeline declares when it runs.

::

    from ferryman import pipeline
    from ferryman.dsl.schedules import cron, interval

    @pipeline(
        schedules=[
            cron("0 3 * * 1-5", timezone="Asia/Kolkata", params={"day": "today"}),
            interval(900, name="every-15-min", overlap="skip"),
        ]
    )
    def report(day: str = "today") -> None: ...

Deploying the pipeline creates, updates or deletes its declared schedules
by name (docs/schedules.md). Each helper returns a plain mapping (the fields
of a schedule); importing this module is cheap (no pydantic).
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["cron", "interval"]


def _name_of(text: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()
    return slug[:100] or "schedule"


def cron(
    expression: str,
    *,
    timezone: str = "UTC",
    name: str | None = None,
    params: dict[str, Any] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """A cron schedule (5 fields, or 6 with seconds first) in an IANA time
    zone. ``name`` defaults to one made from the expression
    (``cron-0-3-1-5``); ``options`` are the other fields of a schedule
    (``catchup``, ``overlap``, ``jitter``, ``on_missing_time``, ...)."""
    return {
        "name": name or "cron-" + _name_of(expression.replace("*", "")),
        "cron": expression,
        "timezone": timezone,
        "params": dict(params or {}),
        **options,
    }


def interval(
    seconds: float,
    *,
    name: str | None = None,
    params: dict[str, Any] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """A schedule every ``seconds`` (anchored at ``start_at``, else the Unix
    epoch, so every scheduler agrees on the ticks)."""
    return {
        "name": name or f"every-{seconds:g}s",
        "interval": seconds,
        "params": dict(params or {}),
        **options,
    }

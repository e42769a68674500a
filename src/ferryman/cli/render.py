"""How the CLI shows runs: state colours, durations, log lines (shared by the
local and the ``--server`` commands)."""

from __future__ import annotations

from typing import Any

from ferryman.cli.common import console, escape

STATE_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "cancelled": "yellow",
    "running": "cyan",
    "retrying": "magenta",
    "queued": "blue",
    "pending": "dim",
    "skipped": "dim",
}


def styled(state: str) -> str:
    """``state`` in its colour (rich markup)."""
    return f"[{STATE_STYLE.get(state, 'white')}]{state}[/]"


def fmt_duration(seconds: float | None) -> str:
    """``1.25s`` under a minute, ``2m05s`` above, empty when unknown."""
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.2f}s"
    m, s = divmod(int(seconds), 60)
    return f"{m}m{s:02d}s"


def print_log_line(rec: dict[str, Any]) -> None:
    """One log line, prefixed with its step and attempt (stderr in red)."""
    prefix = f"[{rec['node']}#{rec['attempt']}]"
    style = "red" if rec["stream"] == "stderr" else "dim"
    console.print(f"[{style}]{escape(prefix)}[/] {escape(rec['line'])}", highlight=False,
                  soft_wrap=True)  # fmt: skip

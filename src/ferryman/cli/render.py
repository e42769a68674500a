"""How the CLI shows runs: state colours, durations, log lines and ``--json``
(shared by the local and the ``--server`` commands)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import typer

from ferryman.cli.common import console, escape

if TYPE_CHECKING:
    from ferryman.api.schemas import LogLinePublic, RunDetail

#: Log lines of the failed step shown under a failed run.
FAILURE_TAIL = 20

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


def print_json(value: Any) -> None:
    """``value`` (a model, a list of models or plain data) as indented JSON,
    written as is (never through rich: no markup, no wrapping)."""
    import json

    from pydantic import BaseModel

    def plain(v: Any) -> Any:
        if isinstance(v, BaseModel):
            return v.model_dump(mode="json")
        if isinstance(v, list):
            return [plain(x) for x in v]
        return v

    typer.echo(json.dumps(plain(value), indent=2, default=str))


def print_json_line(value: Any) -> None:
    """One model as one line of JSON (JSON Lines, for streams such as logs)."""
    typer.echo(value.model_dump_json())


def first_line(text: str | None) -> str:
    """The first line of ``text`` (errors can hold a whole traceback)."""
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""


def print_failure(run: RunDetail, tail: Sequence[LogLinePublic]) -> None:
    """Why ``run`` did not succeed: its failed step with the attempt it
    failed on, the step's error and its last log lines (``tail``), each
    labelled ``[step#attempt]`` since they may come from several attempts;
    or the run's own error. The same for ``ferryman run`` (embedded and
    ``--server``), ``runs rerun`` and ``runs get``."""
    if run.failed_node:
        node = next((n for n in run.nodes if n.name == run.failed_node), None)
        of = f" (attempt {node.attempt} of {node.max_attempts})" if node is not None else ""
        console.print(f"[red]failed step:[/] {escape(run.failed_node)}{of}")
        if node is not None and node.error:
            console.print(f"[red]error:[/] {escape(node.error)}", soft_wrap=True)
        if tail:
            console.print("[dim]last log lines:[/]")
            for rec in tail:
                label = escape(f"[{rec.node}#{rec.attempt}]")
                console.print(f"  [dim]{label}[/] {escape(rec.line)}", soft_wrap=True,
                              highlight=False)  # fmt: skip
    elif run.error:
        console.print(f"[red]error:[/] {escape(run.error)}", soft_wrap=True)

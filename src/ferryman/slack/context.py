"""What every command gets and gives: who asked (``Context``), the answer
(``Reply``), the refusal (``Refused``), and the small helpers the command
modules share (``commands.py``, ``schedules.py``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ferryman.domain.params import ParamsInvalid
from ferryman.notify.report import run_links
from ferryman.services.auth import Principal
from ferryman.services.catalog import resolve_name
from ferryman.services.runs import RunService
from ferryman.settings import Settings
from ferryman.slack import render
from ferryman.slack.grammar import Command, GrammarError
from ferryman.store.engine import Store


@dataclass
class Context:
    """Who asked, where, and what the command may use."""

    settings: Settings
    store: Store
    runs: RunService
    principal: Principal
    channel: str
    thread_ts: str | None  # the thread the answer goes in
    event_key: str  # the Slack event's id: a started run's idempotency key

    @property
    def namespace(self) -> str:
        return self.settings.slack.namespace

    def run_url(self, run_id: str) -> str:
        return run_links(self.settings, run_id)["ui"]


@dataclass
class Reply:
    """An answer: text (and blocks); ``run_id`` when it is a run's message
    (kept current afterwards); the audit's outcome and detail."""

    text: str
    blocks: list[dict[str, Any]] | None = None
    run_id: str | None = None
    outcome: str = "ok"
    detail: str | None = None
    shown: str = ""  # a run message: what it shows (``render.shown_key``)


class Refused(Exception):
    """The command is understood but not done (unknown user, role, channel)."""


Handler = Callable[[Context, Command], Reply]


def arg(cmd: Command, what: str) -> str:
    """The command's first word; ``GrammarError`` with the usage if there is none."""
    if not cmd.args:
        raise GrammarError(f"`{cmd.verb}` needs {what}: `{cmd.verb} <{what}>`")
    return cmd.args[0]


def split_namespace(ctx: Context, name: str) -> tuple[str, str]:
    """(namespace, name) of ``[namespace/]name`` (the bot's namespace by default)."""
    ns, _, bare = name.rpartition("/")
    return ns or ctx.namespace, bare


def find_pipeline(ctx: Context, name: str) -> tuple[str, str]:
    """(namespace, registered name) of ``[namespace/]name``, normalised like the old API."""
    ns, bare = split_namespace(ctx, name)
    with ctx.store.read() as conn:
        return ns, resolve_name(conn, ns, bare)


def params_reply(exc: ParamsInvalid, pipeline: str, nothing: str = "nothing started") -> Reply:
    """Every parameter error (path and reason), and that nothing was done."""
    lines = [
        f"• {render.code(e.path or '(parameters)')}: {render.esc(e.reason)}" for e in exc.errors
    ]
    name = render.esc(pipeline)
    text = f":warning: {len(lines)} parameter error(s) for *{name}*; {nothing}:\n"
    return Reply(text + "\n".join(lines), outcome="invalid", detail=str(exc))

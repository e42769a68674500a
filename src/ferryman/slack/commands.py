"""The bot's commands: one function each, called with the parsed ``Command``
and who asked (``Context``), answering a ``Reply``.

``COMMANDS`` is the table: verb → (function, role needed, one line of help).
A new command is a function and a line there (the schedule commands are in
``schedules.py``). Functions call services and render; they never write
tables themselves.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass

from ferryman.domain.options import Origin, RunOptions
from ferryman.domain.params import ParamsInvalid, validate_params
from ferryman.errors import NotFound
from ferryman.services import queries
from ferryman.services.auth import Role
from ferryman.services.catalog import latest
from ferryman.slack import render, schedules
from ferryman.slack.context import (
    Context,
    Handler,
    Refused,
    Reply,
    arg,
    find_pipeline,
    params_reply,
)
from ferryman.slack.grammar import Command, GrammarError, encode_b64

LOG_TAIL = 40  # log lines shown by ``logs``
LIST_LIMIT = 10  # runs shown by ``list``


def _run_id(ctx: Context, given: str) -> str:
    with ctx.store.read() as conn:
        return queries.resolve_run_id(conn, given)


def run_message_reply(ctx: Context, run_id: str, prefix: str = "") -> Reply:
    """The run message of ``run_id`` (its line and buttons)."""
    with ctx.store.read() as conn:
        run = queries.get_run(conn, run_id, with_nodes=False)
    text, blocks = render.run_message(run, ctx.run_url(run_id))
    return Reply(prefix + text, blocks, run_id=run_id, shown=render.shown_key(run))


# -- commands ----------------------------------------------------------------------


def cmd_run(ctx: Context, cmd: Command) -> Reply:
    ns, name = find_pipeline(ctx, arg(cmd, "pipeline"))
    try:
        started = ctx.runs.start(
            ns,
            name,
            cmd.params or {},
            options=RunOptions(
                slack_channel=ctx.channel, slack_thread=ctx.thread_ts, slack_attach_log=True
            ),
            origin=Origin(kind="slack", user=ctx.principal.username),
            idempotency_key=f"slack:{ctx.event_key}",
        )
    except ParamsInvalid as exc:
        return params_reply(exc, name)
    reply = run_message_reply(ctx, started.id)
    reply.detail = f"run {started.id}"
    return reply


def cmd_status(ctx: Context, cmd: Command) -> Reply:
    run_id = _run_id(ctx, arg(cmd, "run"))
    with ctx.store.read() as conn:
        run = queries.get_run(conn, run_id)
    text, blocks = render.run_message(run, ctx.run_url(run_id))
    steps = ", ".join(f"{render.code(n['name'])} {n['state']}" for n in run["nodes"][:20])
    text += f"\nsteps: {steps}" if steps else ""
    blocks[0]["text"]["text"] = text
    return Reply(text, blocks)


def cmd_cancel(ctx: Context, cmd: Command) -> Reply:
    run_id = _run_id(ctx, arg(cmd, "run"))
    ctx.runs.cancel(run_id, f"cancelled from Slack by {ctx.principal.username}")
    return run_message_reply(ctx, run_id, ":no_entry_sign: cancel requested\n")


def cmd_rerun(ctx: Context, cmd: Command) -> Reply:
    run_id = _run_id(ctx, arg(cmd, "run"))
    new_id = ctx.runs.rerun(run_id)
    return run_message_reply(ctx, new_id, ":repeat: re-run started\n")


def cmd_logs(ctx: Context, cmd: Command) -> Reply:
    run_id = _run_id(ctx, arg(cmd, "run"))
    step = cmd.args[1] if len(cmd.args) > 1 else None
    with ctx.store.read() as conn:
        run = queries.get_run(conn, run_id, with_nodes=False)
        if step is None and run.get("failed_node"):
            step = run["failed_node"]
        lines = queries.get_logs(conn, run_id, node=step, tail=LOG_TAIL)
    where = f"step {render.code(step)}" if step else "all steps"
    if not lines:
        return Reply(f"no log lines yet for run {render.code(run['name'])} ({where})")
    shown = render.condense_tracebacks([(str(ln["node"]), str(ln["line"])) for ln in lines])
    body = "\n".join((f"[{node}] " if step is None else "") + line for node, line in shown)
    head = f"last {len(lines)} log lines of run {render.code(run['name'])}, {where}:\n"
    return Reply(head + render.block(body))


def cmd_list(ctx: Context, cmd: Command) -> Reply:
    pipeline = None
    ns = ctx.namespace
    if cmd.args:
        ns, pipeline = find_pipeline(ctx, cmd.args[0])
    with ctx.store.read() as conn:
        rows = queries.list_runs(
            conn, namespace=ns, pipeline=pipeline, limit=LIST_LIMIT, with_params=False
        )
    if not rows:
        return Reply("no runs yet" + (f" of *{render.esc(pipeline)}*" if pipeline else ""))
    return Reply("\n".join(render.run_line(r, ctx.run_url(r["id"])) for r in rows))


def cmd_describe(ctx: Context, cmd: Command) -> Reply:
    ns, name = find_pipeline(ctx, arg(cmd, "pipeline"))
    with ctx.store.read() as conn:
        spec = latest(conn, ns, name).spec
    return Reply(render.describe(spec, ns))


def cmd_create_recurring(ctx: Context, cmd: Command) -> Reply:
    ns, name = find_pipeline(ctx, arg(cmd, "pipeline"))
    params = cmd.params or {}
    with ctx.store.read() as conn:
        spec = latest(conn, ns, name).spec
    try:
        validate_params(spec, params)
    except ParamsInvalid as exc:
        return params_reply(exc, name)
    target = name if ns == ctx.namespace else f"{ns}/{name}"
    payload = encode_b64(params)
    remind = f'/remind <#{ctx.channel}> "@ferryman run {target} {payload}" every weekday at 9am'
    native = f'schedule {target} "0 9 * * 1-5" Europe/Paris {payload}'
    text = (
        "Paste this (change the time as you like) to start the run from a Slack reminder:\n"
        f"```{render.esc(remind)}```\n"
        ":bulb: Better, a native ferryman *schedule*: it lives in ferryman (visible to "
        "everyone, pausable, time-zone aware, no missed fires) instead of in one person's "
        "reminders. Mention me with (change the cron and the time zone as you like):\n"
        f"```{render.esc(native)}```"
    )
    return Reply(text, detail=json.dumps(params)[:500])


def cmd_help(ctx: Context, cmd: Command) -> Reply:
    lines = ["*ferryman* — mention me (or `/ferryman`) with one of:"]
    lines += [f"• `{usage}` — {help_}" for usage, help_ in (h for _, _, h in _help_rows())]
    lines.append(f"Pipelines are in namespace `{render.esc(ctx.namespace)}` (or write `ns/name`).")
    return Reply("\n".join(lines))


@dataclass(frozen=True)
class Entry:
    """One command: its function, the role it needs, its usage and help."""

    handler: Handler
    role: Role
    usage: str
    help: str


COMMANDS: dict[str, Entry] = {
    "run": Entry(
        cmd_run, Role.OPERATOR, "run <pipeline> ```{json}```", "start a run (or b64_… params)"
    ),
    "status": Entry(cmd_status, Role.VIEWER, "status <run>", "a run's state and steps"),
    "cancel": Entry(cmd_cancel, Role.OPERATOR, "cancel <run>", "cancel a run"),
    "rerun": Entry(cmd_rerun, Role.OPERATOR, "rerun <run>", "re-run a failed or cancelled run"),
    "logs": Entry(cmd_logs, Role.VIEWER, "logs <run> [step]", "the tail of a run's log"),
    "list": Entry(cmd_list, Role.VIEWER, "list [pipeline]", "recent runs"),
    "describe": Entry(cmd_describe, Role.VIEWER, "describe <pipeline>", "a pipeline's parameters"),
    "create_recurring": Entry(
        cmd_create_recurring,
        Role.OPERATOR,
        "create_recurring <pipeline> ```{json}```",
        "a /remind command that starts the run",
    ),
    "schedule": Entry(
        schedules.cmd_schedule,
        Role.OPERATOR,
        schedules.USAGE,
        "a native schedule of the pipeline (its next fire times in the answer)",
    ),
    "schedules": Entry(
        schedules.cmd_schedules, Role.VIEWER, "schedules [pipeline]", "the schedules"
    ),
    "unschedule": Entry(
        schedules.cmd_unschedule, Role.OPERATOR, "unschedule <name>", "delete a schedule"
    ),
    "pause": Entry(schedules.cmd_pause, Role.OPERATOR, "pause <name>", "pause a schedule"),
    "resume": Entry(
        schedules.cmd_resume, Role.OPERATOR, "resume <name>", "resume a paused schedule"
    ),
    "help": Entry(cmd_help, Role.VIEWER, "help", "this list"),
}
#: other words for a command
ALIASES = {"rerun": "rerun", "re-run": "rerun", "runs": "list", "log": "logs", "params": "describe"}


def _help_rows() -> list[tuple[str, Entry, tuple[str, str]]]:
    return [(verb, e, (e.usage, e.help)) for verb, e in COMMANDS.items()]


def lookup(verb: str) -> Entry:
    """The command ``verb`` names; ``GrammarError`` with the closest ones otherwise."""
    verb = ALIASES.get(verb, verb).replace("-", "_")
    entry = COMMANDS.get(verb)
    if entry is None:
        close = difflib.get_close_matches(verb, list(COMMANDS), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(f'`{c}`' for c in close)}?" if close else ""
        raise GrammarError(f"I don't know `{verb}`{hint} (`help` lists what I do)")
    return entry


def execute(ctx: Context, cmd: Command) -> Reply:
    """Run ``cmd`` for ``ctx.principal``: role checked, expected errors answered."""
    entry = lookup(cmd.verb)
    if not ctx.principal.role.allows(entry.role):
        raise Refused(
            f"`{cmd.verb}` needs the {entry.role.value} role; "
            f"{ctx.principal.username} is {ctx.principal.role.value}"
        )
    return entry.handler(ctx, cmd)


__all__ = ["COMMANDS", "Context", "NotFound", "Refused", "Reply", "execute", "lookup"]

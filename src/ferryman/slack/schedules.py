"""The bot's schedule commands: ``schedule``, ``schedules``, ``unschedule``,
``pause`` and ``resume`` (docs/slack.md#schedules).

They are native ferryman schedules, made and changed through
``services/schedules.py`` exactly as the REST API makes them (the same
checks: the pipeline exists, its parameters are valid, the cron and the
time zone are real); this module only reads the command and renders.
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
import re
import shlex
from functools import cache
from zoneinfo import available_timezones

from ferryman.domain.params import ParamsInvalid
from ferryman.domain.schedules import ScheduleSpec, next_ticks
from ferryman.errors import Conflict, InvalidInput, NotFound
from ferryman.services import schedules as svc
from ferryman.slack import render
from ferryman.slack.context import (
    Context,
    Reply,
    arg,
    find_pipeline,
    params_reply,
    split_namespace,
)
from ferryman.slack.grammar import Command, GrammarError

USAGE = 'schedule <pipeline> "<cron>" [time zone] [as <name>] ```{json}```'
SHOWN_FIRES = 3  # coming fire times in the answer of ``schedule`` and ``resume``
LIST_LIMIT = 30  # schedules shown by ``schedules``
#: characters of cron text that are not allowed in a name, and what replaces them
_NAME_CHARS = str.maketrans({"*": "x", "/": "s", ",": ".", "?": "x", "#": "h"})
_NOT_NAME = re.compile(r"[^A-Za-z0-9_.-]")


def derived_name(pipeline: str, cron: str) -> str:
    """The name a schedule gets when none is given: the pipeline and the cron
    fields (``export_data-0_9_x_x_1-5`` for ``0 9 * * 1-5``)."""
    fields = "_".join(f.translate(_NAME_CHARS) for f in cron.split())
    return _NOT_NAME.sub("-", f"{pipeline}-{fields}")[:128]


def _words(cmd: Command) -> list[str]:
    """The command's words after the verb, with `inline code` read like a
    quoted string (people paste cron text in backticks)."""
    if not cmd.text:
        return cmd.args
    try:
        return shlex.split(cmd.text.replace("`", '"'))[1:]
    except ValueError:
        return cmd.args


def _read(cmd: Command) -> tuple[str, str, str, str | None]:
    """(pipeline, cron, time zone, name or None) of a ``schedule`` command."""
    words = _words(cmd)
    if len(words) < 2:
        raise GrammarError(f"`schedule` needs a pipeline and a cron: `{USAGE}`")
    pipeline, cron, rest = words[0], words[1], words[2:]
    if len(cron.split()) == 1 and rest:
        raise GrammarError(
            f'put the cron in quotes, e.g. `schedule {pipeline} "0 9 * * 1-5" Europe/Paris`'
        )
    name: str | None = None
    if "as" in rest:
        at = rest.index("as")
        if at + 1 >= len(rest):
            raise GrammarError(f"`as` needs the schedule's name: `{USAGE}`")
        name = rest[at + 1]
        rest = rest[:at] + rest[at + 2 :]
    if len(rest) > 1:
        raise GrammarError(
            f"I don't understand {' '.join(rest[1:])!r}; the usage is `{USAGE}` "
            "(the cron in quotes, then at most a time zone and a name)"
        )
    return pipeline, cron, (rest[0] if rest else "UTC"), name


@cache
def _zones() -> list[str]:
    return sorted(available_timezones())


def _zone_hint(zone: str) -> str:
    """`` (did you mean …?)`` for a time zone that does not exist."""
    zones = _zones()
    by_city = [z for z in zones if z.rsplit("/", 1)[-1].lower() == zone.lower()]
    close = by_city or difflib.get_close_matches(zone, zones, n=3, cutoff=0.6)
    return f" (did you mean {', '.join(f'`{z}`' for z in close)}?)" if close else ""


def _when(at: dt.datetime, spec: ScheduleSpec) -> str:
    """``Mon 2026-12-07 09:00 CET (08:00 UTC)``, the UTC date shown when it differs."""
    at = at if at.tzinfo else at.replace(tzinfo=dt.UTC)
    local, utc = at.astimezone(spec.zone), at.astimezone(dt.UTC)
    utc_text = utc.strftime("%H:%M UTC" if utc.date() == local.date() else "%Y-%m-%d %H:%M UTC")
    if spec.timezone == "UTC":
        return utc.strftime("%a %Y-%m-%d %H:%M UTC")
    return f"{local.strftime('%a %Y-%m-%d %H:%M %Z')} ({utc_text})"


def _fires(spec: ScheduleSpec) -> str:
    ticks = next_ticks(spec, dt.datetime.now(dt.UTC), SHOWN_FIRES)
    if not ticks:
        return "it has no coming fire times (it has ended)"
    return "next fire times:\n" + "\n".join(f"• {_when(t, spec)}" for t in ticks)


def _target(ctx: Context, ns: str, name: str) -> str:
    return name if ns == ctx.namespace else f"{ns}/{name}"


def _find(ctx: Context, given: str) -> tuple[str, svc.Schedule]:
    """(namespace, schedule) of ``[namespace/]name``; ``NotFound`` with the closest names."""
    ns, name = split_namespace(ctx, given)
    with ctx.store.read() as conn:
        try:
            return ns, svc.get(conn, ns, name)
        except NotFound:
            names = [s.name for s in svc.list_schedules(conn, ns)]
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else " (`schedules` lists them)"
    raise NotFound(f"no schedule {name!r} in namespace {ns!r}{hint}")


# -- commands ------------------------------------------------------------------------


def cmd_schedule(ctx: Context, cmd: Command) -> Reply:
    """Create a native schedule of a pipeline."""
    given, cron, zone, name = _read(cmd)
    ns, pipeline = find_pipeline(ctx, given)
    name = name or derived_name(pipeline, cron)
    params = cmd.params or {}
    raw = {"name": name, "pipeline": pipeline, "cron": cron, "timezone": zone, "params": params}
    try:
        spec = svc.parse_spec(raw)
    except InvalidInput as exc:
        hint = _zone_hint(zone) if "time zone" in exc.message else ""
        return Reply(
            f":warning: {render.esc(exc.message)}{hint}; nothing created.\nUsage: `{USAGE}`",
            outcome="invalid",
            detail=exc.message,
        )
    try:
        made = svc.create(ctx.store, ns, spec, user=ctx.principal.username, source="slack")
    except ParamsInvalid as exc:
        return params_reply(exc, pipeline, "nothing created")
    except Conflict as exc:
        return Reply(
            f":warning: {render.esc(exc.message)}: give another name with `as <name>` "
            f"(or `unschedule {render.esc(_target(ctx, ns, name))}` first); nothing created",
            outcome="invalid",
            detail=exc.message,
        )
    shown = f"`{render.esc(json.dumps(params, ensure_ascii=False))[:300]}`"
    target = render.esc(_target(ctx, ns, made.name))
    text = (
        f":calendar: Schedule {render.code(made.name)} created: *{render.esc(pipeline)}* "
        f"{render.esc(made.spec.describe())}, "
        f"{f'parameters {shown}' if params else 'default parameters'}.\n"
        f"{_fires(made.spec)}\n"
        f"`pause {target}` · `resume {target}` · `unschedule {target}` · `schedules`"
    )
    return Reply(text, detail=f"schedule {ns}/{made.name}")


def _line(s: svc.Schedule) -> str:
    state = ":double_vertical_bar: paused" if s.spec.paused else ""
    if not s.spec.paused:
        state = f"next {_when(s.next_due_at, s.spec)}" if s.next_due_at else "ended"
    line = (
        f"{':calendar:' if not s.spec.paused else ':zzz:'} {render.code(s.name)} — "
        f"*{render.esc(s.spec.pipeline)}* {render.esc(s.spec.describe())} — {state}"
    )
    if s.source == "pipeline":
        line += " _(declared by the pipeline)_"
    return line


def cmd_schedules(ctx: Context, cmd: Command) -> Reply:
    """The schedules of the namespace, or of one pipeline."""
    ns, pipeline = ctx.namespace, None
    if cmd.args:
        ns, pipeline = find_pipeline(ctx, cmd.args[0])
    with ctx.store.read() as conn:
        found = svc.list_schedules(conn, ns, pipeline)
    of = f" of *{render.esc(pipeline)}*" if pipeline else f" in namespace `{render.esc(ns)}`"
    if not found:
        return Reply(f"no schedules{of} (`{USAGE}` makes one)")
    lines = [f"{len(found)} schedule(s){of}:"] + [_line(s) for s in found[:LIST_LIMIT]]
    if len(found) > LIST_LIMIT:
        lines.append(f"… and {len(found) - LIST_LIMIT} more (`GET /schedules` lists them all)")
    return Reply("\n".join(lines))


def cmd_unschedule(ctx: Context, cmd: Command) -> Reply:
    """Delete a schedule (its runs stay)."""
    ns, s = _find(ctx, arg(cmd, "name"))
    svc.delete(ctx.store, ns, s.name)
    text = f":wastebasket: Schedule {render.code(s.name)} deleted; its runs stay."
    if s.source == "pipeline":
        text += (
            f"\nIt is declared by pipeline *{render.esc(s.spec.pipeline)}*: its next deploy "
            "brings it back (remove it from the pipeline's code to delete it for good)."
        )
    return Reply(text, detail=f"unschedule {ns}/{s.name}")


def cmd_pause(ctx: Context, cmd: Command) -> Reply:
    """Pause a schedule."""
    ns, s = _find(ctx, arg(cmd, "name"))
    if s.spec.paused:
        return Reply(f"Schedule {render.code(s.name)} is already paused.")
    svc.set_paused(ctx.store, ns, s.name, True)
    target = render.esc(_target(ctx, ns, s.name))
    return Reply(
        f":double_vertical_bar: Schedule {render.code(s.name)} paused: it starts nothing "
        f"until `resume {target}`.",
        detail=f"pause {ns}/{s.name}",
    )


def cmd_resume(ctx: Context, cmd: Command) -> Reply:
    """Resume a schedule; the ticks of the pause are not fired."""
    ns, s = _find(ctx, arg(cmd, "name"))
    if not s.spec.paused:
        return Reply(f"Schedule {render.code(s.name)} is not paused; {_fires(s.spec)}")
    resumed = svc.set_paused(ctx.store, ns, s.name, False)
    return Reply(
        f":arrow_forward: Schedule {render.code(s.name)} resumed (the ticks of the pause "
        f"are not fired); {_fires(resumed.spec)}",
        detail=f"resume {ns}/{s.name}",
    )


__all__ = [
    "cmd_pause",
    "cmd_resume",
    "cmd_schedule",
    "cmd_schedules",
    "cmd_unschedule",
    "derived_name",
]

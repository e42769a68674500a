"""What the bot shows: Slack text (mrkdwn) and Block Kit blocks.

Every text a step or a user produced is escaped (a message never carries a
link or a mention the bot did not make) and passes the redactor's token
shapes; errors are one line (``notify.report.one_line_error``), never a
traceback.
"""

from __future__ import annotations

from typing import Any

from ferryman.domain.spec import PipelineSpec
from ferryman.notify.report import STATE_EMOJI, human_duration, one_line_error
from ferryman.redaction import SHAPES_ONLY

#: action ids of the run message's buttons
CANCEL, RERUN, LOGS = "ferryman_cancel", "ferryman_rerun", "ferryman_logs"
MAX_TEXT = 3500  # Slack cuts a message's text at 40k; keep answers readable
_RUNNING = {"queued": ":hourglass_flowing_sand:", "running": ":arrows_counterclockwise:"}


def esc(text: object) -> str:
    """``text`` safe in mrkdwn, with token shapes masked."""
    t = SHAPES_ONLY.text(str(text))
    return t.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def code(text: object) -> str:
    """Inline code (backticks in the text become quotes)."""
    return "`" + esc(text).replace("`", "'") + "`"


def block(text: str, limit: int = MAX_TEXT) -> str:
    """A code block, cut from the start to ``limit`` characters (the tail is
    what matters in a log)."""
    t = esc(text).replace("```", "'''")
    if len(t) > limit:
        t = "…" + t[-limit:]
    return f"```{t}```"


def condense_tracebacks(lines: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Log lines (step, line) with each Python traceback's frames replaced by
    one line: a chat message shows the exception, never a traceback (the
    full log is attached to a failed run's completion, and in the CLI/API)."""
    out: list[tuple[str, str]] = []
    skipping: dict[str, int] = {}  # step -> frame lines skipped so far
    for step, line in lines:
        if line.startswith("Traceback (most recent call last)"):
            skipping[step] = 0
            continue
        if step in skipping:
            if line.startswith((" ", "\t")) or not line.strip():
                skipping[step] += 1
                continue
            out.append((step, f"[traceback: {skipping.pop(step)} lines not shown]"))
        out.append((step, line))
    return out


def state_emoji(state: str) -> str:
    return STATE_EMOJI.get(state) or _RUNNING.get(state, ":grey_question:")


def run_line(run: dict[str, Any], url: str) -> str:
    """One line about a run: state, name, pipeline, progress, link."""
    state = str(run["state"])
    done = run["nodes_total"] - run["nodes_remaining"]
    line = (
        f"{state_emoji(state)} *{esc(run['pipeline'])}* run {code(run['name'])} {state}"
        f" ({done}/{run['nodes_total']} steps"
    )
    if run.get("duration") is not None:
        line += f", {human_duration(run['duration'])}"
    line += f") <{url}|open>"
    if state == "failed":
        why = one_line_error(run.get("error"))
        step = f" at step {code(run['failed_node'])}" if run.get("failed_node") else ""
        line += f"\n> failed{step}" + (f": {esc(why)}" if why else "")
    return line


def shown_key(run: dict[str, Any]) -> str:
    """What a run message shows that is worth an edit: state and progress."""
    return f"{run['state']}:{run['nodes_total'] - run['nodes_remaining']}/{run['nodes_total']}"


def run_message(run: dict[str, Any], url: str) -> tuple[str, list[dict[str, Any]]]:
    """The run message: its line, and buttons while useful (Cancel while it
    runs, Re-run once failed or cancelled, Logs always)."""
    text = run_line(run, url)
    buttons: list[dict[str, Any]] = []
    state = str(run["state"])
    if state in ("queued", "running"):
        buttons.append(_button("Cancel", CANCEL, run["id"], style="danger"))
    if state in ("failed", "cancelled"):
        buttons.append(_button("Re-run", RERUN, run["id"], style="primary"))
    buttons.append(_button("Logs", LOGS, run["id"]))
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": text}},
        {"type": "actions", "block_id": f"run_{run['id']}", "elements": buttons},
    ]
    return text, blocks


def _button(label: str, action: str, value: str, style: str | None = None) -> dict[str, Any]:
    b: dict[str, Any] = {
        "type": "button",
        "text": {"type": "plain_text", "text": label},
        "action_id": action,
        "value": value,
    }
    if style:
        b["style"] = style
    return b


def describe(spec: PipelineSpec, namespace: str) -> str:
    """A pipeline's parameters: type, required or default, constraints, and its validators."""
    head = f"*{esc(namespace)}/{esc(spec.name)}*"
    lines = [head + (f" — {esc(spec.description)}" if spec.description else "")]
    if not spec.params:
        lines.append("no parameters")
    for p in spec.params:
        kind = p.type + (f"[{p.items}]" if p.items else "")
        need = "required" if p.required and p.default is None else f"default {code(p.default)}"
        extra = []
        if p.enum:
            extra.append("one of " + ", ".join(code(v) for v in p.enum))
        for key in ("minimum", "maximum", "min_length", "max_length", "pattern"):
            value = getattr(p, key)
            if value is not None:
                extra.append(f"{key.replace('_', ' ')} {code(value)}")
        line = f"• {code(p.name)} ({esc(kind)}, {need})"
        if extra:
            line += ": " + ", ".join(extra)
        if p.description:
            line += f" — {esc(p.description)}"
        lines.append(line)
    for v in spec.validators:
        fields = ", ".join(code(f) for f in v.fields)
        lines.append(f"validator {code(v.kind)} on {fields}")
    return "\n".join(lines)

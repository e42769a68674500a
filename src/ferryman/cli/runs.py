"""``ferryman runs``: list, inspect, cancel and follow runs, in the local
database or on a server (``--server``/``FERRYMAN_SERVER``).

A run is named by its id, a unique prefix of it (6+ hex digits) or its name
(``brave-otter-42``) everywhere."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import typer

from ferryman.cli.common import (
    EXIT_FAILED,
    clean_errors,
    console,
    escape,
    fail,
    open_store,
    table,
)
from ferryman.cli.embedded import execute_embedded
from ferryman.cli.readers import Reader, RunFilter, reader
from ferryman.cli.render import (
    FAILURE_TAIL,
    first_line,
    fmt_duration,
    print_failure,
    print_json,
    print_json_line,
    print_log_line,
    styled,
)

if TYPE_CHECKING:
    from ferryman.api.schemas import RunDetail

app = typer.Typer(help="Inspect and control runs.", no_args_is_help=True)

SERVER = typer.Option(
    None, "--server", envvar="FERRYMAN_SERVER", help="Ask this ferryman server instead"
)
JSON = typer.Option(False, "--json", help="Print JSON (the REST API's fields) instead")
RUN = typer.Argument(..., help="The run: its id, a unique prefix of 6+, or its name")


def _label_filters(items: list[str] | None) -> list[tuple[str, str]]:
    out = []
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--label {item!r} must look like key=value")
        out.append((key, value))
    return out


@app.command("ls")
def ls(
    state: str = typer.Option(None, "--state"),
    pipeline: str = typer.Option(None, "--pipeline"),
    namespace: str = typer.Option(None, "--namespace", "-n"),
    label: list[str] = typer.Option(
        None, "--label", "-l", help="key=value the run carries (repeatable: all must match)"
    ),
    limit: int = typer.Option(20, "--limit", min=1, max=200),
    as_json: bool = JSON,
    server: str = SERVER,
) -> None:
    """List runs, newest first."""
    with clean_errors():
        from ferryman.domain.states import RunState

        if state and state not in {s.value for s in RunState}:
            raise ValueError(f"unknown state {state!r} (one of {', '.join(RunState)})")
        f = RunFilter(namespace, pipeline, state, _label_filters(label), limit)
        with reader(server) as r:
            rows = r.list_runs(f)
        if as_json:
            print_json(rows)
            return
        t = table("name", "pipeline", "state", "steps", "created", "duration", "run id")
        for run in rows:
            done = run.nodes_total - run.nodes_remaining
            t.add_row(
                escape(run.name),
                escape(f"{run.namespace}/{run.pipeline}"),
                styled(run.state),
                f"{done}/{run.nodes_total}",
                f"{run.created_at:%Y-%m-%d %H:%M:%S}",
                fmt_duration(run.duration),
                run.id,
            )
        console.print(t)


@app.command("get")
def get(run_id: str = RUN, as_json: bool = JSON, server: str = SERVER) -> None:
    """Show a run and its steps."""
    with clean_errors(), reader(server) as r:
        run = r.get_run(run_id)
        if as_json:
            print_json(run)
            return
        show_run(run)
        if run.failed_node:  # (the run's own error is in the header already)
            tail = r.logs(run.id, step=run.failed_node, attempt=None, tail=FAILURE_TAIL).items
            print_failure(run, tail)


def show_run(r: RunDetail) -> None:
    """The run's header, parameters, triggers, error and steps."""
    console.print(
        f"[bold]run {r.id}[/] ({escape(r.name)})  {escape(r.namespace)}/{escape(r.pipeline)} "
        f"(version {r.version})  {styled(r.state)}  {fmt_duration(r.duration)}"
    )
    console.print(f"params: {escape(repr(r.params))}")
    print_triggers(r)
    if r.error:
        console.print(f"[red]error:[/] {escape(r.error)}")
    t = table("step", "state", "attempt", "duration", "error")
    for n in r.nodes:
        t.add_row(
            escape(n.name),
            styled(n.state) + (" (reused)" if n.reused else ""),
            str(n.attempt),
            fmt_duration(n.duration),
            escape(first_line(n.error)),
        )
    console.print(t)
    for n in r.nodes:
        if n.message:  # a running step waiting (for a plugin's quota)
            console.print(f"[yellow]{escape(n.name)}:[/] {escape(n.message)}")


def print_triggers(r: RunDetail) -> None:
    """The event trigger that started this run, and what this run's end triggered."""
    t = r.trigger or {}
    if t.get("kind") == "event":
        console.print(
            f"triggered by: run {t.get('run_id')} of {t.get('namespace')}/{t.get('pipeline')} "
            f"({t.get('state')}, event {t.get('event_id')}, chain level {t.get('depth')})"
        )
    for f in r.triggered:
        target = f"{f.namespace}/{f.pipeline}"
        if f.run_id:
            console.print(f"triggered: {target} run {f.run_id}")
        else:
            console.print(f"[yellow]trigger {target} started no run:[/] {escape(f.error or '')}")


@app.command("cancel")
def cancel(run_id: str = RUN, server: str = SERVER) -> None:
    """Cancel a run: stop its running steps and skip the rest."""
    if server:
        from ferryman.cli import remote

        with clean_errors(), remote.client(server) as c:
            try:
                rid = c.cancel_run(run_id).id
            except Exception as exc:
                remote.api_errors(exc)
            console.print(f"run {rid}: cancel requested")
        return
    with clean_errors():
        from ferryman.cli.common import settings
        from ferryman.services.queries import resolve_run_id
        from ferryman.services.runs import RunService

        s = settings()
        store = open_store(s)
        with store.read() as conn:
            rid = resolve_run_id(conn, run_id)
        RunService(store, trigger_max_depth=s.worker.trigger_max_depth).cancel(rid)
        console.print(f"run {rid}: cancel requested")


@app.command("rerun")
def rerun(
    run_id: str = RUN,
    watch: bool = typer.Option(False, "--watch", "-w", help="Show live per-step progress"),
    queue_only: bool = typer.Option(
        False, "--queue-only", help="Only queue it for `ferryman worker` processes"
    ),
    server: str = SERVER,
) -> None:
    """Re-run a failed or cancelled run from its failed steps (the outputs of the
    steps that succeeded are reused). Runs it here, like `ferryman run`."""
    code = 0
    if server:
        from ferryman.cli import remote

        with clean_errors(), remote.client(server) as c:
            try:
                new = c.rerun(run_id)
            except Exception as exc:
                remote.api_errors(exc)
            console.print(f"run [bold]{new.id}[/] ({escape(new.name)}) (re-run of {run_id}) "
                          f"on {server}")  # fmt: skip
            if watch:
                code = remote.follow_remote(c, new.id, True, server)
        raise typer.Exit(code)
    with clean_errors():
        from ferryman.cli.common import settings
        from ferryman.services.queries import get_run, resolve_run_id
        from ferryman.services.runs import RunService

        s = settings()
        store = open_store(s)
        with store.read() as conn:
            rid = resolve_run_id(conn, run_id)
        svc = RunService(store, trigger_max_depth=s.worker.trigger_max_depth)
        new_id = svc.rerun(rid)
        with store.read() as conn:
            name = get_run(conn, new_id, with_nodes=False)["name"]
        if queue_only:
            console.print(f"run {new_id} ({escape(name)}) queued (re-run of {rid})")
            return
        console.print(f"run [bold]{new_id}[/] ({escape(name)}) (re-run of {rid})")
        code = execute_embedded(store, s, svc, new_id, watch, "ferryman runs rerun")
    raise typer.Exit(code)


@app.command("logs")
def logs_command(
    run_id: str = RUN,
    step: str = typer.Option(None, "--step", "-s", help="Only this step's lines"),
    attempt: int = typer.Option(None, "--attempt", "-a", min=1, help="Only this attempt's lines"),
    tail: int = typer.Option(
        None, "--tail", "-t", min=1, max=10000, help="Only the last N lines (then --follow)"
    ),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing until the run ends"),
    as_json: bool = typer.Option(
        False, "--json", help="Print each line as a JSON object (JSON Lines)"
    ),
    server: str = SERVER,
) -> None:
    """Print a run's logs (stdout and stderr of its steps)."""
    with clean_errors(), reader(server) as r:
        try:
            _print_logs(r, r.run_id(run_id), step, attempt, tail, follow, as_json)
        except KeyboardInterrupt:  # following, and the user has seen enough
            raise typer.Exit(130) from None


@app.command("outputs")
def outputs_command(
    run_id: str = RUN,
    step: str = typer.Argument(None, help="Only this step's output, printed as JSON"),
    as_json: bool = JSON,
    server: str = SERVER,
) -> None:
    """Print the outputs of a run's steps (the values they returned): a
    table, or with STEP that step's output alone, as JSON."""
    import json

    with clean_errors(), reader(server) as r:
        rid = r.run_id(run_id)
        got = r.outputs(rid, step)
        if as_json:
            print_json(got)
            return
        if step is not None:
            if step not in got.outputs:
                fail(f"step {step!r} of run {rid} has no output ({_why_none(r, rid, step)})",
                     EXIT_FAILED)  # fmt: skip
            print_json(got.outputs[step])
            return
        if not got.outputs:
            console.print(f"run {rid}: no step has an output (yet)")
            return
        t = table("step", "output")
        for name, value in got.outputs.items():
            t.add_row(escape(name), escape(json.dumps(value)))
        console.print(t)


def _why_none(r: Reader, rid: str, step: str) -> str:
    node = next((n for n in r.get_run(rid).nodes if n.name == step), None)
    if node is None:
        return "no such step"
    if node.state == "succeeded":
        return "it returned none"
    error = first_line(node.error)
    return f"it is {node.state}: {error}" if error else f"it is {node.state}"


def _print_logs(
    r: Reader,
    rid: str,
    step: str | None,
    attempt: int | None,
    tail: int | None,
    follow: bool,
    as_json: bool,
) -> None:
    after, batch = 0, 5000
    first = tail
    while True:
        page = r.logs(rid, step=step, attempt=attempt, after=after, limit=batch, tail=first)
        for rec in page.items:
            if as_json:
                print_json_line(rec)
            else:
                print_log_line(rec.model_dump())
        after, full = page.next_after, first is None and len(page.items) == batch
        first = None
        if full:
            continue
        if not follow or page.run_state.terminal:
            return
        time.sleep(0.3)

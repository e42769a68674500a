"""``ferryman runs``: list, inspect, cancel and follow runs."""

from __future__ import annotations

import time
from typing import Any

import typer

from ferryman.cli.common import clean_errors, console, open_store, table
from ferryman.cli.embedded import execute_embedded
from ferryman.cli.render import fmt_duration, print_log_line, styled

app = typer.Typer(help="Inspect and control runs.", no_args_is_help=True)

SERVER = typer.Option(
    None, "--server", envvar="FERRYMAN_SERVER", help="Ask this ferryman server instead"
)


def _remote(fn: Any, *args: Any) -> Any:
    from ferryman.cli import remote

    try:
        return fn(*args)
    except Exception as exc:
        remote.api_errors(exc)


@app.command("ls")
def ls(
    state: str = typer.Option(None, "--state"),
    pipeline: str = typer.Option(None, "--pipeline"),
    namespace: str = typer.Option(None, "--namespace", "-n"),
    limit: int = typer.Option(20, "--limit", min=1, max=200),
    server: str = SERVER,
) -> None:
    """List runs, newest first."""
    with clean_errors():
        from ferryman.domain.states import RunState
        from ferryman.services.queries import list_runs

        if state and state not in {s.value for s in RunState}:
            raise ValueError(f"unknown state {state!r} (one of {', '.join(RunState)})")
        if server:
            from ferryman.cli import remote

            rows = _remote(remote.runs_ls, server, namespace, pipeline, state, limit)
        else:
            store = open_store()
            with store.read() as conn:
                rows = list_runs(
                    conn,
                    namespace=namespace,
                    pipeline=pipeline,
                    state=state,
                    limit=limit,
                    with_params=False,  # not shown: never read
                )
        t = table("pipeline", "state", "steps", "created", "duration")
        t.add_column("run", no_wrap=True, min_width=32)
        for r in rows:
            done = r["nodes_total"] - r["nodes_remaining"]
            t.add_row(
                f"{r['namespace']}/{r['pipeline']}",
                styled(r["state"]),
                f"{done}/{r['nodes_total']}",
                f"{r['created_at']:%Y-%m-%d %H:%M:%S}",
                fmt_duration(r["duration"]),
                r["id"],
            )
        console.print(t)


@app.command("get")
def get(run_id: str, server: str = SERVER) -> None:
    """Show a run and its steps."""
    with clean_errors():
        from ferryman.services.queries import find_run_id, get_run

        if server:
            from ferryman.cli import remote

            r = _remote(remote.runs_get, server, run_id)
        else:
            from ferryman.services.triggers import firings_of

            store = open_store()
            with store.read() as conn:
                r = get_run(conn, find_run_id(conn, run_id))
                r["triggered"] = firings_of(conn, r["id"])
        console.print(
            f"[bold]run {r['id']}[/]  {r['namespace']}/{r['pipeline']} "
            f"(version {r['version']})  {styled(r['state'])}  "
            f"{fmt_duration(r['duration'])}"
        )
        console.print(f"params: {r['params']}")
        print_triggers(r)
        if r["error"]:
            console.print(f"[red]error:[/] {r['error']}")
        t = table("step", "state", "attempt", "duration", "error")
        for n in r["nodes"]:
            t.add_row(
                n["name"],
                styled(n["state"]) + (" (reused)" if n["reused"] else ""),
                str(n["attempt"]),
                fmt_duration(n["duration"]),
                (n["error"] or "")[:80],
            )
        console.print(t)


def print_triggers(r: dict[str, Any]) -> None:
    """The event trigger that started this run, and what this run's end triggered."""
    t = r.get("trigger") or {}
    if t.get("kind") == "event":
        console.print(
            f"triggered by: run {t.get('run_id')} of {t.get('namespace')}/{t.get('pipeline')} "
            f"({t.get('state')}, event {t.get('event_id')}, chain level {t.get('depth')})"
        )
    for f in r.get("triggered") or []:
        target = f"{f['namespace']}/{f['pipeline']}"
        if f.get("run_id"):
            console.print(f"triggered: {target} run {f['run_id']}")
        else:
            console.print(f"[yellow]trigger {target} started no run:[/] {f.get('error')}")


@app.command("cancel")
def cancel(run_id: str, server: str = SERVER) -> None:
    """Cancel a run: stop its running steps and skip the rest."""
    if server:
        from ferryman.cli import remote

        with clean_errors():
            rid = _remote(remote.runs_cancel, server, run_id)
            console.print(f"run {rid}: cancel requested")
        return
    with clean_errors():
        from ferryman.cli.common import settings
        from ferryman.services.queries import find_run_id
        from ferryman.services.runs import RunService

        s = settings()
        store = open_store(s)
        with store.read() as conn:
            rid = find_run_id(conn, run_id)
        RunService(store, trigger_max_depth=s.trigger_max_depth).cancel(rid)
        console.print(f"run {rid}: cancel requested")


@app.command("rerun")
def rerun(
    run_id: str,
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

        with clean_errors():
            new = _remote(remote.runs_rerun, server, run_id)
            console.print(f"run [bold]{new}[/] (re-run of {run_id}) on {server}")
            if watch:
                with remote.client(server) as c:
                    code = remote.follow_remote(c, new, True)
        raise typer.Exit(code)
    with clean_errors():
        from ferryman.cli.common import settings
        from ferryman.services.queries import find_run_id
        from ferryman.services.runs import RunService

        s = settings()
        store = open_store(s)
        with store.read() as conn:
            rid = find_run_id(conn, run_id)
        svc = RunService(store, trigger_max_depth=s.trigger_max_depth)
        new = svc.rerun(rid)
        if queue_only:
            console.print(f"run {new} queued (re-run of {rid})")
            return
        console.print(f"run [bold]{new}[/] (re-run of {rid})")
        code = execute_embedded(store, s, svc, new, watch)
    raise typer.Exit(code)


@app.command("logs")
def logs_command(
    run_id: str,
    step: str = typer.Option(None, "--step", "-s"),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing until the run ends"),
    server: str = SERVER,
) -> None:
    """Print a run's logs (stdout and stderr of its steps)."""
    if server:
        from ferryman.cli import remote

        with clean_errors():
            _remote(remote.runs_logs, server, run_id, step, follow)
        return
    with clean_errors():
        from ferryman.domain.states import RunState
        from ferryman.services.queries import find_run_id, get_logs
        from ferryman.store.tables import runs

        store = open_store()
        with store.read() as conn:
            rid = find_run_id(conn, run_id)
        last = 0
        while True:
            with store.read() as conn:
                batch = get_logs(conn, rid, node=step, after_id=last, limit=5000)
                state = conn.execute(
                    runs.select().with_only_columns(runs.c.state).where(runs.c.id == rid)
                ).scalar_one()
            for rec in batch:
                print_log_line(rec)
                last = rec["id"]
            if len(batch) == 5000:
                continue
            if not follow or RunState(state).terminal:
                break
            time.sleep(0.3)

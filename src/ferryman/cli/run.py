"""``ferryman run``: start a run and (embedded) execute it in this process."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from rich.table import Table

from ferryman.cli.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    clean_errors,
    console,
    err_console,
    escape,
    open_store,
    parse_params,
    real_console,
    settings,
    setup_logging,
    type_params,
)
from ferryman.cli.runs import fmt_duration, styled


def _looks_like_file(ref: str) -> bool:
    """A file or ``package.module:pipeline`` (as opposed to a deployed pipeline's name)."""
    target = ref.partition(":")[0]
    return ":" in ref or target.endswith((".py", ".yaml", ".yml", ".json")) or Path(target).exists()


def run_command(
    ref: str = typer.Argument(
        ..., help="FILE.py[:PIPELINE], FILE.yaml, or the name of a deployed pipeline"
    ),
    param: list[str] = typer.Option(None, "--param", "-p", help="name=value (JSON values ok)"),
    params_file: Path = typer.Option(None, "--params-file", help="JSON or YAML file of params"),
    namespace: str = typer.Option("default", "--namespace", "-n"),
    watch: bool = typer.Option(False, "--watch", "-w", help="Show live per-step progress"),
    label: list[str] = typer.Option(None, "--label", "-l", help="key=value label"),
    infrastructure: str = typer.Option(None, "--infrastructure", help="Override for every step"),
    idempotency_key: str = typer.Option(None, "--idempotency-key"),
    timeout: float = typer.Option(None, "--timeout", min=0.001, help="Run timeout (seconds)"),
    server: str = typer.Option(
        None, "--server", envvar="FERRYMAN_SERVER", help="Start the run on this ferryman server"
    ),
    wait: bool = typer.Option(False, "--wait", help="With --server: wait for the run to end"),
) -> None:
    """Run a pipeline on the embedded engine and wait for it to end, or start it
    on a server with --server (add --watch or --wait to follow it there).

    Exit code: 0 succeeded, 1 failed or cancelled, 2 bad input, 130 interrupted.
    """
    setup_logging()
    if server:
        raise typer.Exit(_run_on_server(server, ref, param, params_file, namespace, watch, wait,
                                        label, idempotency_key, timeout))  # fmt: skip
    with clean_errors():
        from ferryman.domain.options import RunOptions
        from ferryman.domain.params import validate_params
        from ferryman.dsl.loader import load_pipeline
        from ferryman.services.catalog import latest, register
        from ferryman.services.runs import RunService

        params = parse_params(param, params_file)
        labels = _labels(label)
        s = settings()
        spec = load_pipeline(ref) if _looks_like_file(ref) else None
        if spec is not None:
            params = type_params(params, spec)
            validate_params(spec, params)  # before touching the database
        store = open_store(s)
        with store.write() as conn:
            pv = (
                register(conn, namespace, spec)
                if spec is not None
                else latest(conn, namespace, ref)
            )
        if spec is None:
            params = type_params(params, pv.spec)
        if infrastructure:
            from ferryman.infra.registry import infrastructure_class

            infrastructure_class(infrastructure)
        options = RunOptions(infrastructure=infrastructure or None, timeout=timeout or None)
        svc = RunService(store, trigger_max_depth=s.trigger_max_depth)
        started = svc.start_version(
            pv, params, options=options, labels=labels, idempotency_key=idempotency_key
        )
        run_id = started.id
        if not started.created:
            console.print(f"run {run_id} already exists for this idempotency key")
        console.print(f"run [bold]{run_id}[/] of {namespace}/{pv.name} (version {pv.version})")
        code = _execute_embedded(store, s, svc, run_id, watch)
    raise typer.Exit(code)


def _labels(items: list[str] | None) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in items or []:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise ValueError(f"label {item!r} must look like key=value")
        labels[k] = v
    return labels


def _run_on_server(
    server: str, ref: str, param: list[str] | None, params_file: Path | None, namespace: str,
    watch: bool, wait: bool, label: list[str] | None, key: str | None, timeout: float | None,
) -> int:  # fmt: skip
    from ferryman.cli import remote

    code = 0
    with clean_errors():
        params = parse_params(param, params_file)
        labels = _labels(label)
        spec = None
        if _looks_like_file(ref):
            from ferryman.dsl.loader import load_pipeline

            spec = load_pipeline(ref)
        try:
            code = remote.run_remote(
                server, namespace, ref if spec is None else spec.name, params, spec=spec,
                labels=labels, idempotency_key=key, timeout=timeout, watch=watch, wait=wait,
            )  # fmt: skip
        except Exception as exc:
            remote.api_errors(exc)
    return code


def _execute_embedded(store: Any, s: Any, svc: Any, run_id: str, watch: bool) -> int:
    from ferryman.engine.worker import Worker

    worker = Worker(store, s, only_runs={run_id})
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            worker.run_until({run_id})
        except BaseException as exc:  # surfaced to the main thread below
            errors.append(exc)

    thread = threading.Thread(target=serve, name="ferryman-embedded-worker", daemon=True)
    thread.start()
    interrupted = {"n": 0}

    def on_sigint(_signum: int, _frame: FrameType | None) -> None:
        interrupted["n"] += 1
        if interrupted["n"] == 1:
            err_console.print("[yellow]cancelling the run (Ctrl-C again to quit at once)…[/]")
            try:
                svc.cancel(run_id, "cancelled from the command line (Ctrl-C)")
            except Exception as exc:  # already ended, for example
                err_console.print(f"[dim]{exc}[/]")
        else:
            raise KeyboardInterrupt

    old = signal.signal(signal.SIGINT, on_sigint)
    try:
        _follow(store, run_id, thread, watch)
    except KeyboardInterrupt:
        worker.stop()
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGINT, old)
    thread.join(timeout=30)
    if errors:
        raise errors[0]
    return _summary(store, run_id, interrupted["n"] > 0)


def _follow(store: Any, run_id: str, thread: threading.Thread, watch: bool) -> None:
    """Wait for the run, showing progress when ``watch``."""
    from ferryman.services.queries import get_events, node_counts, running_nodes

    last_seq = 0
    live = None
    if watch:
        from rich.live import Live

        live = Live(console=real_console(), refresh_per_second=8, transient=True)
    if live is not None:
        live.start()
    try:
        while thread.is_alive():
            thread.join(0.15)
            if not watch:
                continue
            with store.read() as conn:
                evs = get_events(conn, run_id, after_seq=last_seq)
                counts = node_counts(conn, run_id)
                running = running_nodes(conn, run_id)
            for e in evs:
                last_seq = e["seq"]
                _print_event(e)
            assert live is not None
            live.update(_progress_table(counts, running))
        if watch:
            with store.read() as conn:
                for e in get_events(conn, run_id, after_seq=last_seq, limit=100000):
                    _print_event(e)
    finally:
        if live is not None:
            live.stop()


def _print_event(e: dict[str, Any]) -> None:
    t = e["type"]
    if t in ("NodeQueued",):
        return
    when = f"{e['time']:%H:%M:%S}"
    target = f"{e['node']}#{e['attempt']}" if e["node"] else "run"
    state = t[4:].lower() if t.startswith("Node") else t[3:].lower()
    msg = f" — {escape(e['message'])}" if e["message"] else ""
    console.print(f"[dim]{when}[/] {escape(target)} {styled(state)}{msg}", soft_wrap=True)


def _progress_table(counts: dict[str, int], running: list[dict[str, Any]]) -> Table:
    total = sum(counts.values())
    done = sum(counts.get(k, 0) for k in ("succeeded", "failed", "skipped", "cancelled"))
    from rich.table import Table

    t = Table.grid(padding=(0, 2))
    summary = "  ".join(f"{styled(k)} {v}" for k, v in sorted(counts.items()))
    t.add_row(f"[bold]{done}/{total}[/] steps ended", summary)
    now = time.time()
    for r in running[:10]:
        age = now - r["started_at"].timestamp() if r["started_at"] else 0
        t.add_row(f"  {escape(r['name'])}#{r['attempt']}", f"running {age:.1f}s")
    return t


def _summary(store: Any, run_id: str, interrupted: bool) -> int:
    from ferryman.services.queries import get_logs, get_run

    with store.read() as conn:
        r = get_run(conn, run_id)
        tail = get_logs(conn, run_id, node=r["failed_node"], tail=20) if r["failed_node"] else []
    state = r["state"]
    console.print(f"run {run_id} {styled(state)} in {fmt_duration(r['duration'])}")
    if state == "succeeded":
        return 0
    if r["failed_node"]:
        node = next(n for n in r["nodes"] if n["name"] == r["failed_node"])
        console.print(f"[red]failed step:[/] {escape(node['name'])} (attempt {node['attempt']})")
        console.print(f"[red]error:[/] {escape(node['error'] or '')}", soft_wrap=True)
        if tail:
            console.print("[dim]last log lines:[/]")
            for rec in tail:
                console.print(f"  {escape(rec['line'])}", soft_wrap=True, highlight=False)
    elif r["error"]:
        console.print(f"[red]error:[/] {escape(r['error'])}")
    return EXIT_INTERRUPTED if interrupted and state == "cancelled" else EXIT_FAILED

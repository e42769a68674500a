"""Executing a run in this process (``ferryman run``, ``ferryman runs rerun``):
an embedded worker restricted to the run, progress while it runs, and a
summary at the end."""

from __future__ import annotations

import signal
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING, Any

from ferryman.cli.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    console,
    err_console,
    escape,
    real_console,
)
from ferryman.cli.render import FAILURE_TAIL, fmt_duration, print_failure, styled

if TYPE_CHECKING:
    from rich.table import Table


def execute_embedded(
    store: Any, s: Any, svc: Any, run_id: str, watch: bool, command: str = "ferryman run"
) -> int:
    """Run ``run_id`` to its end on a worker in this process and return the
    exit code (Ctrl-C cancels the run; a second Ctrl-C quits at once).

    The run is leased to this process (``services/run_leases.py``): if the
    process dies, the next ferryman command ends the run instead of leaving
    it ``running``; ``command`` names the process in that run's error."""
    from ferryman.engine.worker import Worker
    from ferryman.services import run_leases

    worker = Worker(store, s, only_runs={run_id})
    with store.write() as conn:
        run_leases.hold(conn, run_id, worker.id, command, s.worker.lease_seconds)
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
    with store.write() as conn:
        run_leases.release(conn, run_id)
    return _summary(store, s, run_id, interrupted["n"] > 0)


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


def _summary(store: Any, s: Any, run_id: str, interrupted: bool) -> int:
    from ferryman.cli.readers import LocalReader

    r = LocalReader(store, s)
    run = r.get_run(run_id)
    tail = []
    if run.failed_node:
        tail = r.logs(run_id, step=run.failed_node, attempt=None, tail=FAILURE_TAIL).items
    console.print(f"run {run_id} {styled(run.state)} in {fmt_duration(run.duration)}")
    if run.state == "succeeded":
        return 0
    print_failure(run, tail)
    return EXIT_INTERRUPTED if interrupted and run.state == "cancelled" else EXIT_FAILED

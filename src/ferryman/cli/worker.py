"""``ferryman worker``: claim and run steps from the shared database."""

from __future__ import annotations

import signal
import threading
from types import FrameType

import typer

from ferryman.cli.common import clean_errors, console, open_store, settings, setup_logging
from ferryman.process_secrets import protect_process_secrets


def worker_command(
    concurrency: int = typer.Option(None, "--concurrency", "-c", min=1, help="Steps at once"),
    worker_id: str = typer.Option(None, "--id", help="Worker id (default host:pid:random)"),
    log_level: str = typer.Option("INFO", "--log-level"),
) -> None:
    """Run steps from the database until stopped (SIGTERM/Ctrl-C: finish, then stop)."""
    setup_logging(log_level)
    with clean_errors():
        from ferryman.engine.worker import Worker
        from ferryman.plugins.limits import configured_limits
        from ferryman.plugins.registry import PluginRegistry

        s = settings()
        # A duplicate plugin id, two defaults for a type, bad limits: stop now.
        PluginRegistry().load()
        configured_limits(s)
        # Read once: the steps and libraries this process runs never find them.
        protect_process_secrets()
        store = open_store(s)
        w = Worker(store, s, worker_id=worker_id, concurrency=concurrency)
        stops = 0

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            nonlocal stops
            stops += 1
            if stops > 1:
                raise SystemExit(130)
            console.print(f"worker {w.id}: stopping (finishing running steps)…")
            w.stop()

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, on_signal)
            signal.signal(signal.SIGINT, on_signal)
        console.print(f"worker {w.id} started on {store.url.get_backend_name()}")
        w.run()
        console.print(f"worker {w.id} stopped")

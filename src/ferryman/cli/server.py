"""``ferryman server``: the REST API with an embedded worker and the callback
dispatcher (see ``ferryman.server``)."""

from __future__ import annotations

import typer

from ferryman.cli.common import clean_errors, fail, settings, setup_logging
from ferryman.settings import protect_process_secrets


def server_command(
    host: str = typer.Option(None, "--host", help="Address to listen on [FERRYMAN_HOST]"),
    port: int = typer.Option(
        None, "--port", "-p", min=1, max=65535, help="Port to listen on [FERRYMAN_PORT]"
    ),
    no_worker: bool = typer.Option(
        False, "--no-worker", help="Serve the API only; steps run on `ferryman worker`s"
    ),
    log_level: str = typer.Option("WARNING", "--log-level", help="DEBUG, INFO, WARNING, ERROR"),
    access_log: bool = typer.Option(False, "--access-log", help="Log every HTTP request"),
) -> None:
    """Serve the REST API, run steps and deliver run-completion callbacks.

    SIGTERM/Ctrl-C stops gracefully (in-flight requests, steps and callbacks
    finish); a second one forces the exit.
    """
    setup_logging(log_level)
    with clean_errors():
        from ferryman.server import serve

        s = settings()
        overrides = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
        if overrides:
            s = s.model_copy(update=overrides)
        try:
            s.check_production()
            s.check_secret_key()
        except ValueError as exc:
            fail(f"refusing to start: {exc}")
        # Read once: the steps and libraries this process runs never find them.
        protect_process_secrets()
        serve(s, no_worker=no_worker, log_level=log_level, access_log=access_log)


def main() -> None:
    """Run just this command (``python -c "from ferryman.cli.server import main; main()"``)."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(server_command)
    app()

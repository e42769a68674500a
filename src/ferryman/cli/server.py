"""``ferryman server``: the REST API with its loops: an embedded worker, the
callback sender and the event deliverer (see ``ferryman.server``)."""

from __future__ import annotations

import typer

from ferryman.cli.common import clean_errors, fail, settings, setup_logging
from ferryman.process_secrets import protect_process_secrets


def server_command(
    host: str = typer.Option(None, "--host", help="Address to listen on [FERRYMAN_HOST]"),
    port: int = typer.Option(
        None, "--port", "-p", min=1, max=65535, help="Port to listen on [FERRYMAN_PORT]"
    ),
    no_worker: bool = typer.Option(
        False, "--no-worker", help="Serve the API only; steps run on `ferryman worker`s"
    ),
    log_level: str = typer.Option("WARNING", "--log-level", help="DEBUG, INFO, WARNING, ERROR"),
    access_log: bool = typer.Option(
        False, "--access-log", help="Log every HTTP request (whatever --log-level says)"
    ),
) -> None:
    """Serve the REST API, run steps and deliver run-completion callbacks.

    SIGTERM/Ctrl-C stops gracefully (in-flight requests, steps and callbacks
    finish); a second one forces the exit.
    """
    setup_logging(log_level)
    uvicorn_level = _access_log_level(log_level) if access_log else log_level
    with clean_errors():
        from ferryman.server import serve

        s = settings()
        overrides = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
        if overrides:
            s = s.updated(**overrides)
        try:
            s.check_production()
            s.check_secret_key()
        except ValueError as exc:
            fail(f"refusing to start: {exc}")
        if not no_worker:
            from ferryman.plugins.limits import configured_limits
            from ferryman.plugins.registry import PluginRegistry

            # As `ferryman worker`: a duplicate plugin id, two defaults for a
            # type or bad plugin limits stop the embedded worker's server now.
            PluginRegistry().load()
            configured_limits(s)
        # Read once: the steps and libraries this process runs never find them.
        protect_process_secrets()
        serve(s, no_worker=no_worker, log_level=uvicorn_level, access_log=access_log)


def _access_log_level(log_level: str) -> str:
    """``--access-log`` logs every request whatever ``--log-level`` says: the
    access lines are INFO records, so uvicorn's loggers are set to INFO, and
    the records of uvicorn's other loggers below ``log_level`` (its start-up
    chatter) are filtered out again on the way to stderr."""
    import logging

    level = logging.getLevelName(log_level.upper())
    if not isinstance(level, int) or level <= logging.INFO:
        return log_level

    def keep(record: logging.LogRecord) -> bool:
        if record.levelno >= level or record.name == "uvicorn.access":
            return True
        return not record.name.startswith("uvicorn")

    for handler in logging.getLogger().handlers:
        handler.addFilter(keep)
    return "info"


def main() -> None:
    """Run just this command (``python -c "from ferryman.cli.server import main; main()"``)."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(server_command)
    app()

"""The ``ferryman`` command line."""

from __future__ import annotations

import typer

from ferryman.cli import db, pipelines, plugins, preview, run, runs, subscriptions, worker
from ferryman.cli import export as export_cli
from ferryman.cli import schedules as schedules_cli
from ferryman.cli import secrets as secrets_cli
from ferryman.cli import server as server_cli

app = typer.Typer(
    name="ferryman",
    help="ferryman: run and operate pipelines.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Plain help: typer's rich help panels show every flag as taking a value
    # (``--follow <bool>``); click's own help shows flags as flags.
    rich_markup_mode=None,
)
app.command("run")(run.run_command)
app.command("deploy")(pipelines.deploy_command)
app.command("worker")(worker.worker_command)
app.command("server")(server_cli.server_command)
app.command("preview")(preview.preview_command)
app.add_typer(runs.app, name="runs")
app.add_typer(pipelines.app, name="pipelines")
app.add_typer(db.app, name="db")
app.add_typer(subscriptions.app, name="subscriptions")
app.add_typer(schedules_cli.app, name="schedules")
app.command("scheduler")(schedules_cli.scheduler_command)
app.add_typer(export_cli.app, name="export")
app.add_typer(secrets_cli.app, name="secrets")
app.add_typer(plugins.app, name="plugins")


@app.command("login")
def login(
    server: str = typer.Option(..., "--server", envvar="FERRYMAN_SERVER", help="Server URL"),
    username: str = typer.Option(..., "--username", "-u", prompt=True),
    password_stdin: bool = typer.Option(
        False, "--password-stdin", help="Read the password from standard input"
    ),
) -> None:
    """Log in to a ferryman server; the token is kept for later `--server` commands."""
    import sys

    from ferryman.cli import remote
    from ferryman.cli.common import clean_errors

    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("Password", hide_input=True)
    with clean_errors():
        try:
            remote.login(server, username, password)
        except Exception as exc:
            remote.api_errors(exc)


@app.command("version")
def version() -> None:
    """Print ferryman's version."""
    from ferryman import __version__

    typer.echo(__version__)


def main() -> None:
    app()


if __name__ == "__main__":
    main()

"""``ferryman secrets``: ferryman's own secret store (set, ls, rm).

The local database by default, a server with ``--server URL`` (admins). A
value is never an argument (it would stay in the shell's history and show
in ``ps``): it is read from standard input, from an environment variable
(``--from-env``) or a file (``--from-file``), or asked for without echo.
No command prints a value.
"""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path
from typing import Any

import typer

from ferryman.cli.common import clean_errors, console, escape, fail, open_store, table
from ferryman.cli.render import print_json

app = typer.Typer(help="Store secrets for steps (values are never shown).",
                  no_args_is_help=True)  # fmt: skip

SERVER = typer.Option(
    None, "--server", envvar="FERRYMAN_SERVER", help="Ask this ferryman server instead"
)


def _remote(fn: Any, *args: Any, **kw: Any) -> Any:
    from ferryman.cli import remote

    try:
        return fn(*args, **kw)
    except Exception as exc:
        remote.api_errors(exc)


def _value(from_env: str | None, from_file: Path | None) -> str:
    if from_env and from_file:
        fail("give --from-env or --from-file, not both")
    if from_env:
        value = os.environ.get(from_env)
        if not value:
            fail(f"--from-env: environment variable {from_env} is not set or empty")
        return value
    if from_file:
        try:
            text = from_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"--from-file: {from_file}: {getattr(exc, 'strerror', None) or exc}")
        return text[:-1] if text.endswith("\n") else text
    if sys.stdin.isatty():
        value = typer.prompt("value", hide_input=True, confirmation_prompt=True)
        return str(value)
    text = sys.stdin.read()
    # One final line break (``echo x |``) is not part of the value.
    return text[:-1] if text.endswith("\n") else text


@app.command("set")
def set_(
    name: str = typer.Argument(..., help="The secret's name, as steps declare it"),
    from_env: str = typer.Option(None, "--from-env", help="Read the value from this variable"),
    from_file: Path = typer.Option(None, "--from-file", help="Read the value from this file"),
    server: str = SERVER,
) -> None:
    """Create or replace secret NAME (the value from stdin, --from-env, --from-file or a prompt)."""
    with clean_errors():
        from ferryman.services.secret_store import check_value

        value = _value(from_env, from_file)
        check_value(name, value)
        if server:
            from ferryman.cli import remote
            from ferryman.client.secret_calls import SecretCalls

            with remote.client(server) as c:
                row = _remote(c.send, SecretCalls.set_secret(name, value)).model_dump()
        else:
            from ferryman.services.secret_store import set_secret

            with open_store().write() as conn:
                row = set_secret(conn, name, value, by=f"{getpass.getuser()} (local)")
        what = "created" if row.get("created") else "replaced"
        console.print(f"secret [bold]{escape(name)}[/] {what}")


@app.command("ls")
def ls(
    as_json: bool = typer.Option(False, "--json", help="Print JSON (the REST API's fields)"),
    server: str = SERVER,
) -> None:
    """List stored secrets: names, when set, by whom (never values)."""
    with clean_errors():
        if server:
            from ferryman.cli import remote
            from ferryman.client.secret_calls import SecretCalls

            with remote.client(server) as c:
                items = [i.model_dump() for i in _remote(c.send, SecretCalls.list_secrets()).items]
        else:
            from ferryman.services.secret_store import list_secrets

            with open_store().read() as conn:
                items = list_secrets(conn)
        if as_json:
            from ferryman.api.secret_schemas import SecretPublic

            print_json([SecretPublic.model_validate(i) for i in items])
            return
        t = table("name", "updated", "by")
        for i in items:
            t.add_row(
                escape(i["name"]),
                str(i["updated_at"])[:19].replace("T", " "),
                escape(i.get("updated_by") or ""),
            )
        console.print(t)


@app.command("rm")
def rm(name: str = typer.Argument(..., help="The secret's name"), server: str = SERVER) -> None:
    """Remove secret NAME (steps that declare it fail until it is set again)."""
    with clean_errors():
        if server:
            from ferryman.cli import remote
            from ferryman.client.secret_calls import SecretCalls

            with remote.client(server) as c:
                _remote(c.send, SecretCalls.delete_secret(name))
        else:
            from ferryman.services.secret_store import delete_secret

            with open_store().write() as conn:
                delete_secret(conn, name)
        console.print(f"secret {escape(name)} removed")

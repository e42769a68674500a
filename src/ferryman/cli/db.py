"""``ferryman db``: schema migrations."""

from __future__ import annotations

import typer

from ferryman.cli.common import clean_errors, console, settings

app = typer.Typer(help="Database schema.", no_args_is_help=True)


@app.command("upgrade")
def upgrade(revision: str = typer.Argument("head", help="Target revision")) -> None:
    """Upgrade the database schema (also done automatically on start)."""
    with clean_errors():
        from ferryman.store.engine import Store
        from ferryman.store.migrate import current_revision
        from ferryman.store.migrate import upgrade as do_upgrade

        s = settings()
        store = Store(s.db_url, synchronous=s.sqlite_synchronous)
        ran = do_upgrade(store, revision)
        rev = current_revision(store)
        console.print(f"database at revision {rev}" + (" (upgraded)" if ran else " (up to date)"))

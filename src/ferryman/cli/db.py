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
        store = Store.from_settings(s, prepare=False)
        ran = do_upgrade(store, revision)
        rev = current_revision(store)
        console.print(f"database at revision {rev}" + (" (upgraded)" if ran else " (up to date)"))


@app.command("reseal")
def reseal() -> None:
    """Encrypt every stored secret with the first key of FERRYMAN_SECRET_KEY.

    To rotate the key: set FERRYMAN_SECRET_KEY="NEW,OLD" everywhere, run
    this once, then drop OLD (see docs/server.md, "Secrets at rest").
    """
    with clean_errors():
        from ferryman.services.subscriptions import reseal_secrets
        from ferryman.store.engine import Store

        store = Store.from_settings(settings())
        with store.write() as conn:
            n = reseal_secrets(conn, store.secret_box)
        console.print(f"{n} subscription(s) sealed with the current key")
        from ferryman.services.secret_store import reseal_stored_secrets

        with store.write() as conn:
            m = reseal_stored_secrets(conn, store.secret_box)
        console.print(f"{m} stored secret(s) sealed with the current key")

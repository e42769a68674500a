"""The ``store`` resolver: ferryman's own secret store (``ferryman secrets set``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ferryman.secret_resolvers.base import SecretResolver, SecretSourceFailed

if TYPE_CHECKING:
    from ferryman.store.engine import Store


class StoreResolver(SecretResolver):
    """Values stored with ``ferryman secrets set`` in ``store``'s database,
    opened with its secret box (``FERRYMAN_SECRET_KEY``)."""

    kind = "store"

    def __init__(self, store: Store) -> None:
        self._store = store

    def lookup(self, names: Sequence[str]) -> dict[str, str]:
        from ferryman.secret_box import SecretBoxError
        from ferryman.services.secret_store import secret_values

        try:
            with self._store.read() as conn:
                return secret_values(conn, names)
        except SecretBoxError as exc:
            raise SecretSourceFailed(f"stored secrets cannot be opened: {exc}") from None
        except Exception as exc:  # the database is unreachable: say so, briefly
            raise SecretSourceFailed(
                f"stored secrets cannot be read: {type(exc).__name__}"
            ) from None

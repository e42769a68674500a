"""ferryman's own secret store: named values, sealed at rest, never returned.

Admins set, list and remove secrets (``ferryman secrets set|ls|rm``, the
REST API's ``/api/v1/secrets``); listing shows names, when each was set and
by whom, never a value. The only reader of values is the ``store`` secret
resolver (``ferryman.secret_resolvers.stored``), at dispatch, for the names
a step declared. Values are sealed by the store's ``SecretBox`` (the
``Sealed`` column type): a database dump shows ``fmbox1:…``, not the value.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ferryman.domain.secret_names import secret_name_problem
from ferryman.errors import InvalidInput, NotFound
from ferryman.secret_box import SecretBox
from ferryman.store.tables import stored_secrets, utcnow

#: The largest value stored (64 KiB: a PEM bundle fits; an environment does not).
MAX_VALUE_BYTES = 65536
_LISTED = (
    stored_secrets.c.name,
    stored_secrets.c.created_at,
    stored_secrets.c.updated_at,
    stored_secrets.c.updated_by,
)


def check_value(name: str, value: str) -> None:
    """``InvalidInput`` (400) if ``name`` may not name a secret or ``value`` is unusable."""
    problem = secret_name_problem(name)
    if problem is not None:
        raise InvalidInput(problem, [{"path": "name", "reason": problem}])
    if not isinstance(value, str) or value == "":
        raise InvalidInput(
            "a secret's value must not be empty", [{"path": "value", "reason": "empty"}]
        )
    if "\0" in value:
        # Delivered as an environment variable, which cannot hold NUL.
        raise InvalidInput(
            "a secret's value cannot contain NUL", [{"path": "value", "reason": "NUL"}]
        )
    if len(value.encode("utf-8")) > MAX_VALUE_BYTES:
        raise InvalidInput(
            f"a secret's value is at most {MAX_VALUE_BYTES} bytes",
            [{"path": "value", "reason": "too large"}],
        )


def set_secret(conn: Connection, name: str, value: str, *, by: str | None) -> dict[str, Any]:
    """Create or replace secret ``name``; its listing (never the value) and
    whether it was created (``created``)."""
    check_value(name, value)
    now = utcnow()
    changed = conn.execute(
        sa.update(stored_secrets)
        .where(stored_secrets.c.name == name)
        .values(value=value, updated_at=now, updated_by=by)
    ).rowcount
    if not changed:
        # Two admins setting one new name at once: the second insert conflicts;
        # the caller's transaction fails and a retry updates.
        conn.execute(
            sa.insert(stored_secrets).values(
                name=name, value=value, created_at=now, updated_at=now, updated_by=by
            )
        )
    row = conn.execute(sa.select(*_LISTED).where(stored_secrets.c.name == name)).one()
    return {**row._asdict(), "created": not changed}


def list_secrets(conn: Connection) -> list[dict[str, Any]]:
    """Every stored secret's name, times and author, by name (no values)."""
    rows = conn.execute(sa.select(*_LISTED).order_by(stored_secrets.c.name)).all()
    return [r._asdict() for r in rows]


def delete_secret(conn: Connection, name: str) -> None:
    """Remove secret ``name``; ``NotFound`` if there is none."""
    gone = conn.execute(sa.delete(stored_secrets).where(stored_secrets.c.name == name)).rowcount
    if not gone:
        raise NotFound(f"no stored secret named {name!r}")


def secret_values(conn: Connection, names: Iterable[str]) -> dict[str, str]:
    """The values of those of ``names`` that are stored (for the resolver only)."""
    wanted = sorted(set(names))
    if not wanted:
        return {}
    rows = conn.execute(
        sa.select(stored_secrets.c.name, stored_secrets.c.value).where(
            stored_secrets.c.name.in_(wanted)
        )
    ).all()
    return {n: v for n, v in rows}


def reseal_stored_secrets(conn: Connection, box: SecretBox) -> int:
    """Seal every stored secret with ``box``'s first key (key rotation); how many."""
    raw = sa.table("stored_secrets", sa.column("name"), sa.column("value"))
    rows = conn.execute(sa.select(raw.c.name, raw.c.value)).all()
    for name, value in rows:
        conn.execute(sa.update(raw).where(raw.c.name == name).values(value=box.reseal(value)))
    return len(rows)

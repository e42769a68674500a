"""Named node selectors for the gate's guarded updates (``Tx.move_nodes``).

A ``Sel`` carries a clause builder and its bind parameters: the gate builds
the clause once per key and caches the compiled statement (a prepared one
when the selector has no ``IN`` list), because this is the engine's hot path.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ferryman.store.tables import nodes


@dataclass(frozen=True)
class Sel:
    """A named node selector: its clause is built once (with bind parameters)
    and the compiled statement is cached under ``key``."""

    key: str
    build: Callable[[], sa.ColumnElement[bool]]
    params: dict[str, Any]
    expanding: bool = False  # has IN-list parameters (cannot be a Prepared statement)


def sel_attempt(attempt: int, worker: str | None = None) -> Sel:
    """The node's current attempt is ``attempt`` (and it is leased by ``worker``)."""
    if worker is None:
        return Sel(
            "attempt", lambda: nodes.c.attempt == sa.bindparam("s_attempt"), {"s_attempt": attempt}
        )
    return Sel(
        "attempt_worker",
        lambda: sa.and_(
            nodes.c.attempt == sa.bindparam("s_attempt"),
            nodes.c.worker_id == sa.bindparam("s_worker"),
        ),
        {"s_attempt": attempt, "s_worker": worker},
    )


def sel_expired(attempt: int, worker: str, now: dt.datetime) -> Sel:
    """The node is still on ``attempt``, leased by ``worker``, and the lease expired."""
    return Sel(
        "expired",
        lambda: sa.and_(
            nodes.c.attempt == sa.bindparam("s_attempt"),
            nodes.c.worker_id == sa.bindparam("s_worker"),
            nodes.c.lease_expires_at < sa.bindparam("s_now", type_=nodes.c.lease_expires_at.type),
        ),
        {"s_attempt": attempt, "s_worker": worker, "s_now": now},
    )


def sel_ready(run_id: str) -> Sel:
    """Pending nodes of ``run_id`` no longer waiting on any upstream."""
    return Sel(
        "ready",
        lambda: sa.and_(nodes.c.run_id == sa.bindparam("s_run"), nodes.c.waiting_on <= 0),
        {"s_run": run_id},
    )


def sel_names(run_id: str, names: Sequence[str], *, last_wait: bool = False) -> Sel:
    """Nodes of ``run_id`` called ``names`` (with ``last_wait``: only those
    waiting on one more upstream)."""

    one = len(names) == 1

    def build() -> sa.ColumnElement[bool]:
        c = sa.and_(
            nodes.c.run_id == sa.bindparam("s_run"),
            nodes.c.name == sa.bindparam("s_name")
            if one
            else nodes.c.name.in_(sa.bindparam("s_names", expanding=True)),
        )
        return sa.and_(c, nodes.c.waiting_on <= 1) if last_wait else c

    params: dict[str, Any] = {"s_run": run_id}
    if one:
        params["s_name"] = names[0]
    else:
        params["s_names"] = list(names)
    key = ("names_last" if last_wait else "names") + ("1" if one else "")
    return Sel(key, build, params, expanding=not one)

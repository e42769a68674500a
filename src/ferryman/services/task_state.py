"""The plugins' durable, shared state in the database (``TaskState`` of
``ferryman.plugins.state``): resource meta and pending deletes, the token
buckets of the rate limiters, quotas, state messages and counters.

The token bucket is refilled and taken from by one guarded ``UPDATE ...
RETURNING``: on PostgreSQL with the database's clock (``statement_timestamp``),
so workers on hosts whose clocks differ still share one rate; on SQLite the
write transaction (``BEGIN IMMEDIATE``) serialises the takers and the clock
is this host's. A quota place is taken by one guarded ``UPDATE`` of its
counter (``in_use < limit``) in the same transaction as its holder's row, so
no number of workers can go past the limit, and a release counts once.
"""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa

from ferryman.domain.events import EventType
from ferryman.plugins.state import StoredResource
from ferryman.services.cache import RunCache
from ferryman.services.gate import NO_HOOKS, GateHooks, Tx
from ferryman.store.engine import Store
from ferryman.store.tables import (
    plugin_counters,
    plugin_quota_holders,
    plugin_quotas,
    task_resources,
    utcnow,
)

_PG_NOW = "extract(epoch from statement_timestamp())"
_TAKE = """
UPDATE plugin_buckets
SET tokens = {least}(:burst, tokens + ({now} - updated) * :qps) - 1, updated = {now}
WHERE name = :name AND {least}(:burst, tokens + ({now} - updated) * :qps) >= 1
RETURNING tokens
"""
_SEED = (
    "INSERT INTO plugin_buckets (name, tokens, updated) VALUES (:name, :burst, {now}) "
    "ON CONFLICT DO NOTHING"
)
_PEEK = (
    "SELECT {least}(:burst, tokens + ({now} - updated) * :qps) FROM plugin_buckets "
    "WHERE name = :name"
)
_QUOTA_SEED = "INSERT INTO plugin_quotas (key, in_use) VALUES (:key, 0) ON CONFLICT DO NOTHING"
_QUOTA_TAKE = sa.text(
    "UPDATE plugin_quotas SET in_use = in_use + 1 WHERE key = :key AND in_use < :limit "
    "RETURNING in_use"
)
_COUNT = (
    "INSERT INTO plugin_counters (plugin, counter, value) VALUES (:plugin, :counter, :n) "
    "ON CONFLICT (plugin, counter) DO UPDATE SET value = plugin_counters.value + :n"
)


class DbTaskState:
    """``TaskState`` on a ``Store`` (module docstring)."""

    def __init__(self, store: Store, hooks: GateHooks = NO_HOOKS) -> None:
        """``hooks``: the gate's hooks (``RunService.hooks``), so the events
        written here reach the subscribers like every other event."""
        self.store = store
        self.hooks = hooks
        self._cache = RunCache()
        pg = store.is_postgres
        fmt = {"least": "LEAST" if pg else "MIN", "now": _PG_NOW if pg else ":now"}
        self._take = sa.text(_TAKE.format(**fmt))
        self._seed = sa.text(_SEED.format(**fmt))
        self._peek = sa.text(_PEEK.format(**fmt))
        self._seeded: set[str] = set()

    # -- rate limiters ----------------------------------------------------------------

    def take_token(self, bucket: str, qps: float, burst: float) -> float:
        params = {"name": bucket, "qps": qps, "burst": float(burst), "now": time.time()}
        with self.store.write() as conn:
            if bucket not in self._seeded:
                conn.execute(self._seed, params)
                self._seeded.add(bucket)
            if conn.execute(self._take, params).first() is not None:
                return 0.0
            have = conn.execute(self._peek, params).scalar()
        if have is None:  # the row went away (a test truncated): seed again
            self._seeded.discard(bucket)
            return 0.01
        return max((1 - float(have)) / qps, 0.001)

    # -- quotas -------------------------------------------------------------------------

    def quota_acquire(self, key: str, limit: int, holder: str) -> tuple[bool, int]:
        h = plugin_quota_holders.c
        with self.store.write() as conn:
            mine = conn.execute(sa.select(h.quota_key).where(h.holder == holder)).first()
            if mine is None:
                conn.execute(sa.text(_QUOTA_SEED), {"key": key})
                row = conn.execute(_QUOTA_TAKE, {"key": key, "limit": limit}).first()
                if row is not None:
                    conn.execute(
                        sa.insert(plugin_quota_holders).values(
                            holder=holder, quota_key=key, acquired_at=utcnow()
                        )
                    )
                    return True, int(row[0])
            in_use = conn.execute(
                sa.select(plugin_quotas.c.in_use).where(plugin_quotas.c.key == key)
            ).scalar()
            return mine is not None, int(in_use or 0)

    def quota_release(self, holder: str) -> None:
        h = plugin_quota_holders.c
        with self.store.write() as conn:
            key = conn.execute(
                sa.delete(plugin_quota_holders).where(h.holder == holder).returning(h.quota_key)
            ).scalar()
            if key is not None:
                q = plugin_quotas.c
                conn.execute(
                    sa.update(plugin_quotas)
                    .where(q.key == key, q.in_use > 0)
                    .values(in_use=q.in_use - 1)
                )

    # -- resources --------------------------------------------------------------------

    def resource(self, key: str) -> StoredResource | None:
        t = task_resources.c
        with self.store.read() as conn:
            r = conn.execute(
                sa.select(t.key, t.plugin, t.meta, t.delete_reason, t.done, t.context).where(
                    t.key == key
                )
            ).first()
        return _stored(r) if r is not None else None

    def begin_resource(
        self, key: str, plugin: str, run_id: str, node: str, attempt: int, context: dict[str, Any]
    ) -> None:
        now = utcnow()
        with self.store.write() as conn:
            if conn.execute(
                sa.select(task_resources.c.key).where(task_resources.c.key == key)
            ).first():
                return
            conn.execute(
                sa.insert(task_resources).values(
                    key=key,
                    plugin=plugin,
                    run_id=run_id,
                    node=node,
                    attempt=attempt,
                    context=context,
                    meta=None,
                    done=False,
                    created_at=now,
                    updated_at=now,
                )
            )

    def _set(self, key: str, **values: Any) -> None:
        with self.store.write() as conn:
            conn.execute(
                sa.update(task_resources)
                .where(task_resources.c.key == key)
                .values(updated_at=utcnow(), **values)
            )

    def save_meta(self, key: str, meta: Any) -> None:
        self._set(key, meta=meta)

    def request_delete(self, key: str, reason: str) -> None:
        t = task_resources.c
        with self.store.write() as conn:
            conn.execute(
                sa.update(task_resources)
                .where(t.key == key, t.done.is_(False), t.delete_reason.is_(None))
                .values(delete_reason=reason, updated_at=utcnow())
            )

    def finish(self, key: str) -> None:
        self._set(key, done=True, message=None)
        self.quota_release(key)

    def pending_deletes(self, limit: int) -> list[StoredResource]:
        t = task_resources.c
        with self.store.read() as conn:
            rows = conn.execute(
                sa.select(t.key, t.plugin, t.meta, t.delete_reason, t.done, t.context)
                .where(t.done.is_(False), t.delete_reason.is_not(None))
                .order_by(t.updated_at)
                .limit(limit)
            ).all()
        return [_stored(r) for r in rows]

    def note(self, key: str, message: str) -> None:
        self._set(key, message=message or None)

    def waiting(
        self, key: str, run_id: str, node: str, attempt: int, message: str, data: dict[str, Any]
    ) -> None:
        with self.store.write() as conn:
            conn.execute(
                sa.update(task_resources)
                .where(task_resources.c.key == key)
                .values(message=message, updated_at=utcnow())
            )
            tx = Tx(conn, self._cache, self.store, hooks=self.hooks)
            tx.node_event(run_id, EventType.NODE_WAITING.value, node, attempt, message, data)
            tx.flush()

    def count(self, plugin: str, counter: str, n: int = 1) -> None:
        with self.store.write() as conn:
            conn.execute(sa.text(_COUNT), {"plugin": plugin, "counter": counter, "n": n})

    # -- reading (the CLI, tests) ----------------------------------------------------------

    def counters(self) -> dict[str, dict[str, int]]:
        """Every plugin's counters: ``{plugin: {counter: value}}``."""
        c = plugin_counters.c
        out: dict[str, dict[str, int]] = {}
        with self.store.read() as conn:
            for plugin, counter, value in conn.execute(sa.select(c.plugin, c.counter, c.value)):
                out.setdefault(plugin, {})[counter] = int(value)
        return out

    def message(self, run_id: str, node: str) -> str | None:
        """The state message of a step's newest task attempt, if any."""
        t = task_resources.c
        with self.store.read() as conn:
            return conn.execute(
                sa.select(t.message)
                .where(t.run_id == run_id, t.node == node)
                .order_by(t.attempt.desc())
                .limit(1)
            ).scalar()


def _stored(r: Any) -> StoredResource:
    return StoredResource(r.key, r.plugin, r.meta, r.delete_reason, bool(r.done), r.context)

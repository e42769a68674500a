"""PostgreSQL advisory lock ids, one per thing they serialise across processes.

A module of its own so that whoever takes a lock (``engine`` creating the
schema, ``migrate`` upgrading it) imports only this, not each other.
"""

from __future__ import annotations

MIGRATION_LOCK_KEY = 0x66657272  # "ferr": schema creation and upgrades

"""Logins: a username and password checked, failures counted and locked per
(username, client address).

Each attempt is counted *before* the password is checked, by one guarded
``UPDATE … RETURNING`` on ``login_failures`` that also decides the lock the
attempt would earn if it fails: parallel guesses cannot slip in while a slow
(Argon2) check is running, so no more than ``max_failures`` checks run
before the lock, however many arrive at once. A success deletes the row
(which lifts that lock); a failure leaves it as counted.

The lock is per (username, address): the owner of an account is not locked
out by somebody guessing from elsewhere. From the ``max_failures``-th
failure on, each failure locks for ``lock_seconds``, doubled with each
further failure up to ``max_lock_seconds``. Unknown usernames are counted
and locked the same way, so a lock never tells which accounts exist.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from ferryman.services.auth import (
    USERNAME_PATTERN,
    AuthError,
    Principal,
    Role,
    TooManyAttempts,
    burn_verify,
    verify_password,
)
from ferryman.settings import Settings
from ferryman.store.engine import Store
from ferryman.store.tables import UTCDateTime, login_failures, users, utcnow

WRONG = "wrong username or password"
#: Rows idle this long are forgotten (their locks have long passed).
FORGET_AFTER = dt.timedelta(days=1)
_MAX_STEPS = 40  # doublings spelled out in the counting statement


@dataclass(frozen=True)
class LockoutPolicy:
    """When failed logins lock a (username, address) pair, and for how long."""

    max_failures: int = 5
    lock_seconds: float = 60.0
    max_lock_seconds: float = 3600.0

    @classmethod
    def from_settings(cls, settings: Settings) -> LockoutPolicy:
        return cls(
            settings.login.max_failures,
            settings.login.lock_seconds,
            settings.login.max_lock_seconds,
        )

    def lock_for(self, failures: int) -> float | None:
        """Seconds the ``failures``-th failure in a row locks for (None: no lock)."""
        if failures < self.max_failures:
            return None
        steps = min(failures - self.max_failures, _MAX_STEPS)
        return min(self.lock_seconds * 2.0**steps, self.max_lock_seconds)


def login(
    store: Store, username: str, password: str, address: str, policy: LockoutPolicy
) -> Principal:
    """Check ``username`` and ``password`` for a client at ``address``.

    Raises ``TooManyAttempts`` (429) while the pair is locked, ``AuthError``
    (401) for anything wrong: unknown users, users without a password,
    disabled users and wrong passwords get the same answer after the same
    work. Slow on purpose: call it from a thread (the API's login pool).
    """
    if not re.fullmatch(USERNAME_PATTERN, username or ""):
        burn_verify(password)  # nothing to count: no such name can exist
        raise AuthError(WRONG)
    with store.write() as conn:
        _count_attempt(conn, username, address, policy)
        row = conn.execute(sa.select(users).where(users.c.username == username)).first()
    # The check itself runs outside any transaction: on SQLite a write
    # transaction would stall every other writer meanwhile.
    if row is None or not row.password_hash:
        burn_verify(password)
        ok = False
    else:
        ok = verify_password(password, row.password_hash) and not row.disabled
    if not ok or row is None:
        raise AuthError(WRONG)
    with store.write() as conn:
        conn.execute(_pair(sa.delete(login_failures), username, address))
    return Principal(row.id, row.username, Role(row.role), "jwt", session_key=row.session_key)


def _pair(stmt: Any, username: str, address: str) -> Any:
    return stmt.where(login_failures.c.username == username, login_failures.c.address == address)


def _count_attempt(conn: Connection, username: str, address: str, policy: LockoutPolicy) -> None:
    """Count one attempt as a failure, unless the pair is locked (then raise 429)."""
    now = utcnow()
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    conn.execute(
        insert(login_failures)
        .values(username=username, address=address, failures=0, updated_at=now)
        .on_conflict_do_nothing(index_elements=["username", "address"])
    )
    t = login_failures.c
    counted = conn.execute(
        _pair(sa.update(login_failures), username, address)
        .where(sa.or_(t.locked_until.is_(None), t.locked_until <= now))
        .values(
            failures=t.failures + 1,
            locked_until=_lock_if_this_fails(policy, now),
            updated_at=now,
        )
        .returning(t.failures)
    ).first()
    if counted is not None:
        return
    locked = conn.execute(_pair(sa.select(t.locked_until), username, address)).scalar()
    wait = max(1, math.ceil((locked - now).total_seconds())) if locked is not None else 1
    raise TooManyAttempts(f"too many failed logins; try again in {wait}s", wait)


def _lock_if_this_fails(policy: LockoutPolicy, now: dt.datetime) -> Any:
    """``locked_until`` after one more failure, as a SQL expression of the
    current count (SET expressions read the row as it was)."""
    failures = login_failures.c.failures

    def until(n: int) -> Any:
        seconds = policy.lock_for(n)
        assert seconds is not None
        return sa.literal(now + dt.timedelta(seconds=seconds), UTCDateTime())

    whens: list[tuple[Any, Any]] = [
        (failures < policy.max_failures - 1, sa.null()),
    ]
    n = policy.max_failures
    while n - policy.max_failures < _MAX_STEPS and policy.lock_for(n) != policy.max_lock_seconds:
        whens.append((failures == n - 1, until(n)))
        n += 1
    return sa.case(*whens, else_=until(n))


def forget_old_failures(store: Store) -> int:
    """Delete the rows idle for a day (their locks passed long ago); how many."""
    now = utcnow()
    t = login_failures.c
    with store.write() as conn:
        result = conn.execute(
            sa.delete(login_failures).where(
                t.updated_at < now - FORGET_AFTER,
                sa.or_(t.locked_until.is_(None), t.locked_until < now),
            )
        )
    return int(result.rowcount or 0)

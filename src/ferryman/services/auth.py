"""Users, roles, passwords, JWT access tokens and long-lived API tokens.

- Passwords are hashed with Argon2 through ``pwdlib``.
- ``POST /token`` issues a signed JWT (HS256) with an expiry.
- API tokens for machines look like ``fm_<id>_<secret>``; only a SHA-256 of
  the secret is stored; they are shown once, revocable and may expire.
- Repeated failed logins lock the account for a while (HTTP 429).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ferryman.errors import Conflict, FerrymanError, InvalidInput, NotFound
from ferryman.store.tables import api_tokens, users, utcnow

MAX_FAILED_LOGINS = 5
LOCK_SECONDS = 60
TOKEN_PREFIX = "fm_"


class Role(StrEnum):
    """What a user may do: admins manage users; operators run; viewers read."""

    ADMIN = "admin"
    OPERATOR = "operator"
    VIEWER = "viewer"

    def allows(self, needed: Role) -> bool:
        order = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}
        return order[self] >= order[needed]


class AuthError(FerrymanError):
    """Missing, wrong, expired or revoked credentials (HTTP 401)."""

    code = "unauthorized"


class Forbidden(FerrymanError):
    """Authenticated, but the role does not allow this (HTTP 403)."""

    code = "forbidden"


class TooManyAttempts(FerrymanError):
    """Too many failed logins; try again later (HTTP 429)."""

    code = "too_many_requests"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, {"retry_after": retry_after})
        self.retry_after = retry_after


@dataclass(frozen=True)
class Principal:
    """Who is calling."""

    user_id: int
    username: str
    role: Role
    via: str  # "jwt" | "api_token"

    def require(self, role: Role) -> None:
        if not self.role.allows(role):
            raise Forbidden(
                f"this needs the {role.value} role; {self.username} is {self.role.value}"
            )


def _hasher() -> Any:
    from pwdlib import PasswordHash

    return PasswordHash.recommended()


_HASHER: Any = None


def hash_password(password: str) -> str:
    global _HASHER
    if _HASHER is None:
        _HASHER = _hasher()
    return str(_HASHER.hash(password))


def verify_password(password: str, hashed: str) -> bool:
    global _HASHER
    if _HASHER is None:
        _HASHER = _hasher()
    try:
        return bool(_HASHER.verify(password, hashed))
    except Exception:  # a malformed hash never authenticates
        return False


def validate_username(name: str) -> str:
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}", name or ""):
        raise InvalidInput(
            "invalid username: use letters, digits, '_', '.', '@' or '-' (at most 128)",
            [{"path": "username", "reason": "invalid username"}],
        )
    return name


def validate_password(password: str) -> str:
    if len(password or "") < 8:
        raise InvalidInput(
            "password too short (at least 8 characters)",
            [{"path": "password", "reason": "at least 8 characters"}],
        )
    return password


def create_user(
    conn: Connection,
    username: str,
    password: str | None,
    role: Role,
    *,
    slack_user_id: str | None = None,
) -> dict[str, Any]:
    """Create a user; a user without password can only use API tokens (or Slack)."""
    validate_username(username)
    if password is not None:
        validate_password(password)
    if conn.execute(sa.select(users.c.id).where(users.c.username == username)).first():
        raise Conflict(f"user {username!r} already exists")
    now = utcnow()
    uid = conn.execute(
        sa.insert(users)
        .values(
            username=username,
            password_hash=hash_password(password) if password is not None else None,
            role=role.value,
            slack_user_id=slack_user_id,
            disabled=False,
            failed_logins=0,
            created_at=now,
            updated_at=now,
        )
        .returning(users.c.id)
    ).scalar_one()
    return get_user(conn, uid)


def _user_dict(r: Any) -> dict[str, Any]:
    return {
        "id": r.id,
        "username": r.username,
        "role": r.role,
        "slack_user_id": r.slack_user_id,
        "disabled": r.disabled,
        "created_at": r.created_at,
    }


def get_user(conn: Connection, user_id: int) -> dict[str, Any]:
    r = conn.execute(sa.select(users).where(users.c.id == user_id)).first()
    if r is None:
        raise NotFound(f"no user {user_id}")
    return _user_dict(r)


def list_users(conn: Connection) -> list[dict[str, Any]]:
    return [_user_dict(r) for r in conn.execute(sa.select(users).order_by(users.c.id))]


def update_user(
    conn: Connection,
    user_id: int,
    *,
    password: str | None = None,
    role: Role | None = None,
    disabled: bool | None = None,
    slack_user_id: str | None = None,
) -> dict[str, Any]:
    get_user(conn, user_id)
    values: dict[str, Any] = {"updated_at": utcnow()}
    if password is not None:
        values["password_hash"] = hash_password(validate_password(password))
        values["failed_logins"] = 0
        values["locked_until"] = None
    if role is not None:
        values["role"] = role.value
    if disabled is not None:
        values["disabled"] = disabled
    if slack_user_id is not None:
        values["slack_user_id"] = slack_user_id or None
    conn.execute(sa.update(users).where(users.c.id == user_id).values(**values))
    return get_user(conn, user_id)


def delete_user(conn: Connection, user_id: int) -> None:
    get_user(conn, user_id)
    conn.execute(sa.delete(users).where(users.c.id == user_id))


def count_users(conn: Connection) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(users)).scalar_one())


def authenticate(conn: Connection, username: str, password: str) -> Principal:
    """Check a username and password; count failures and lock after too many."""
    now = utcnow()
    r = conn.execute(sa.select(users).where(users.c.username == username)).first()
    if r is not None and r.locked_until is not None and r.locked_until > now:
        wait = int((r.locked_until - now).total_seconds()) + 1
        raise TooManyAttempts(f"too many failed logins; try again in {wait}s", wait)
    if (
        r is None
        or r.disabled
        or not r.password_hash
        or not verify_password(password, r.password_hash)
    ):
        if r is not None:
            failed = r.failed_logins + 1
            values: dict[str, Any] = {"failed_logins": failed}
            if failed >= MAX_FAILED_LOGINS:
                values["locked_until"] = now + dt.timedelta(seconds=LOCK_SECONDS)
                values["failed_logins"] = 0
            conn.execute(sa.update(users).where(users.c.id == r.id).values(**values))
        raise AuthError("wrong username or password")
    if r.failed_logins:
        conn.execute(sa.update(users).where(users.c.id == r.id).values(failed_logins=0))
    return Principal(r.id, r.username, Role(r.role), "jwt")


# -- JWT ---------------------------------------------------------------------


def issue_jwt(principal: Principal, secret: str, ttl_seconds: int) -> tuple[str, int]:
    import jwt

    now = utcnow()
    payload = {
        "sub": str(principal.user_id),
        "name": principal.username,
        "role": principal.role.value,
        "iat": int(now.timestamp()),
        "exp": int(now.timestamp()) + ttl_seconds,
        "iss": "ferryman",
    }
    return jwt.encode(payload, secret, algorithm="HS256"), ttl_seconds


def principal_from_jwt(conn: Connection, token: str, secret: str) -> Principal:
    import jwt

    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            issuer="ferryman",
            options={"require": ["exp", "sub"]},
        )
    except jwt.ExpiredSignatureError:
        raise AuthError("the token has expired") from None
    except jwt.PyJWTError:
        raise AuthError("invalid token") from None
    r = conn.execute(sa.select(users).where(users.c.id == int(claims["sub"]))).first()
    if r is None or r.disabled:
        raise AuthError("the token's user no longer exists or is disabled")
    return Principal(r.id, r.username, Role(r.role), "jwt")


# -- API tokens ------------------------------------------------------------------


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_api_token(
    conn: Connection, user_id: int, name: str, expires_in_days: int | None = None
) -> tuple[dict[str, Any], str]:
    """Create a token; returns (its record, the token itself — shown only now)."""
    get_user(conn, user_id)
    if not name or len(name) > 128:
        raise InvalidInput(
            "token name must be 1 to 128 characters",
            [{"path": "name", "reason": "1 to 128 characters"}],
        )
    tid = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    now = utcnow()
    expires = now + dt.timedelta(days=expires_in_days) if expires_in_days else None
    conn.execute(
        sa.insert(api_tokens).values(
            id=tid,
            user_id=user_id,
            name=name,
            token_hash=_digest(secret),
            created_at=now,
            expires_at=expires,
        )
    )
    return get_api_token(conn, tid), f"{TOKEN_PREFIX}{tid}_{secret}"


def _token_dict(r: Any) -> dict[str, Any]:
    return {
        "id": r.id,
        "user_id": r.user_id,
        "name": r.name,
        "created_at": r.created_at,
        "expires_at": r.expires_at,
        "last_used_at": r.last_used_at,
        "revoked": r.revoked_at is not None,
    }


def get_api_token(conn: Connection, token_id: str) -> dict[str, Any]:
    r = conn.execute(sa.select(api_tokens).where(api_tokens.c.id == token_id)).first()
    if r is None:
        raise NotFound(f"no API token {token_id!r}")
    return _token_dict(r)


def list_api_tokens(conn: Connection, user_id: int | None = None) -> list[dict[str, Any]]:
    q = sa.select(api_tokens).order_by(api_tokens.c.created_at)
    if user_id is not None:
        q = q.where(api_tokens.c.user_id == user_id)
    return [_token_dict(r) for r in conn.execute(q)]


def revoke_api_token(conn: Connection, token_id: str) -> dict[str, Any]:
    get_api_token(conn, token_id)
    conn.execute(
        sa.update(api_tokens)
        .where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    return get_api_token(conn, token_id)


def principal_from_api_token(conn: Connection, token: str) -> Principal:
    if not token.startswith(TOKEN_PREFIX) or token.count("_") < 2:
        raise AuthError("invalid token")
    tid, _, secret = token[len(TOKEN_PREFIX) :].partition("_")
    r = conn.execute(
        sa.select(api_tokens, users.c.username, users.c.role, users.c.disabled)
        .join(users, users.c.id == api_tokens.c.user_id)
        .where(api_tokens.c.id == tid)
    ).first()
    if r is None or not hmac.compare_digest(r.token_hash, _digest(secret)):
        raise AuthError("invalid token")
    now = utcnow()
    if r.revoked_at is not None:
        raise AuthError("the API token was revoked")
    if r.expires_at is not None and r.expires_at <= now:
        raise AuthError("the API token has expired")
    if r.disabled:
        raise AuthError("the token's user is disabled")
    return Principal(r.user_id, r.username, Role(r.role), "api_token")


def touch_api_token(conn: Connection, token_id: str) -> None:
    conn.execute(
        sa.update(api_tokens).where(api_tokens.c.id == token_id).values(last_used_at=utcnow())
    )

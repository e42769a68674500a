"""Users, roles, passwords, JWT access tokens and long-lived API tokens.

- Passwords are hashed with Argon2 through ``pwdlib``.
- ``POST /token`` issues a signed JWT (HS256) with an expiry.
- API tokens for machines look like ``fm_<id>_<secret>``; only a SHA-256 of
  the secret is stored; they are shown once, revocable and may expire.
- Repeated failed logins lock the account for a while (HTTP 429).
- There is always at least one enabled admin: the last one can be neither
  deleted, demoted nor disabled (HTTP 409).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

# The account rules live in the domain (the REST API's wire models declare them
# too); they are re-exported here, where the services have always offered them.
from ferryman.domain.accounts import MAX_ID as MAX_ID
from ferryman.domain.accounts import MAX_PASSWORD_LENGTH as MAX_PASSWORD_LENGTH
from ferryman.domain.accounts import MAX_TOKEN_DAYS as MAX_TOKEN_DAYS
from ferryman.domain.accounts import MIN_PASSWORD_LENGTH as MIN_PASSWORD_LENGTH
from ferryman.domain.accounts import SLACK_ID_PATTERN as SLACK_ID_PATTERN
from ferryman.domain.accounts import TOKEN_ID_PATTERN as TOKEN_ID_PATTERN
from ferryman.domain.accounts import TOKEN_PREFIX as TOKEN_PREFIX
from ferryman.domain.accounts import USERNAME_PATTERN as USERNAME_PATTERN
from ferryman.domain.accounts import Role as Role
from ferryman.errors import Conflict, FerrymanError, InvalidInput, NotFound
from ferryman.store.engine import Store
from ferryman.store.tables import api_tokens, users, utcnow

MAX_FAILED_LOGINS = 5
LOCK_SECONDS = 60
# fm_<hex id>_<urlsafe secret>; checked before any lookup so that junk never
# reaches the database (PostgreSQL rejects NUL bytes in text with an error).
_API_TOKEN_RE = re.compile(rf"{TOKEN_PREFIX}({TOKEN_ID_PATTERN})_([A-Za-z0-9_-]{{1,256}})")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


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
    token_id: str | None = None  # the API token used, if any

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


_DUMMY: tuple[Any, str] | None = None


def _burn_verify(password: str) -> None:
    """Spend as long as a real password check, so that an unknown user, a user
    without a password and a wrong password cannot be told apart by timing."""
    global _DUMMY
    if _DUMMY is None or _DUMMY[0] is not _HASHER:
        dummy = hash_password(secrets.token_urlsafe(16))
        _DUMMY = (_HASHER, dummy)
    verify_password(password, _DUMMY[1])


def validate_username(name: str) -> str:
    if not re.fullmatch(USERNAME_PATTERN, name or ""):
        raise InvalidInput(
            "invalid username: use letters, digits, '_', '.', '@' or '-' (at most 128)",
            [{"path": "username", "reason": "invalid username"}],
        )
    return name


def validate_password(password: str) -> str:
    if len(password or "") < MIN_PASSWORD_LENGTH:
        raise InvalidInput(
            f"password too short (at least {MIN_PASSWORD_LENGTH} characters)",
            [{"path": "password", "reason": f"at least {MIN_PASSWORD_LENGTH} characters"}],
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidInput(
            f"password too long (at most {MAX_PASSWORD_LENGTH} characters)",
            [{"path": "password", "reason": f"at most {MAX_PASSWORD_LENGTH} characters"}],
        )
    return password


def validate_slack_user_id(slack_user_id: str) -> str:
    if not re.fullmatch(SLACK_ID_PATTERN, slack_user_id):
        raise InvalidInput(
            "invalid Slack user id: letters and digits only, e.g. U012AB3CD",
            [{"path": "slack_user_id", "reason": "letters and digits, at most 64"}],
        )
    return slack_user_id


def _check_slack_free(conn: Connection, slack_user_id: str, user_id: int | None = None) -> None:
    q = sa.select(users.c.username).where(users.c.slack_user_id == slack_user_id)
    if user_id is not None:
        q = q.where(users.c.id != user_id)
    other = conn.execute(q).scalar()
    if other is not None:
        raise Conflict(f"Slack user {slack_user_id} is already linked to user {other!r}")


def create_user(
    conn: Connection,
    username: str,
    password: str | None,
    role: Role,
    *,
    slack_user_id: str | None = None,
    password_hash: str | None = None,
) -> dict[str, Any]:
    """Create a user; a user without password can only use API tokens (or Slack).

    ``password_hash`` (from :func:`hash_password`) may replace ``password`` so
    that callers can hash — which is slow on purpose — before they open the
    write transaction.
    """
    validate_username(username)
    if password is not None:
        password_hash = hash_password(validate_password(password))
    if slack_user_id:
        validate_slack_user_id(slack_user_id)
        _check_slack_free(conn, slack_user_id)
    if conn.execute(sa.select(users.c.id).where(users.c.username == username)).first():
        raise Conflict(f"user {username!r} already exists")
    now = utcnow()
    try:
        uid = conn.execute(
            sa.insert(users)
            .values(
                username=username,
                password_hash=password_hash,
                role=role.value,
                slack_user_id=slack_user_id or None,
                disabled=False,
                failed_logins=0,
                created_at=now,
                updated_at=now,
            )
            .returning(users.c.id)
        ).scalar_one()
    except sa.exc.IntegrityError:  # a concurrent create won the race; the caller rolls back
        raise Conflict(f"user {username!r} (or its Slack user) already exists") from None
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
    password_hash: str | None = None,
) -> dict[str, Any]:
    """Change a user; ``slack_user_id=""`` unlinks Slack. Refuses (409) to leave
    no enabled admin. ``password_hash`` may replace ``password`` as in
    :func:`create_user`."""
    before = get_user(conn, user_id)
    values: dict[str, Any] = {"updated_at": utcnow()}
    if password is not None:
        password_hash = hash_password(validate_password(password))
    if password_hash is not None:
        values["password_hash"] = password_hash
        values["tokens_valid_after"] = values["updated_at"]  # earlier JWTs stop working
        values["failed_logins"] = 0
        values["locked_until"] = None
    if role is not None:
        values["role"] = role.value
    if disabled is not None:
        values["disabled"] = disabled
    if slack_user_id:
        validate_slack_user_id(slack_user_id)
        _check_slack_free(conn, slack_user_id, user_id)
    if slack_user_id is not None:
        values["slack_user_id"] = slack_user_id or None
    still_admin = (role or Role(before["role"])) == Role.ADMIN and not (
        disabled if disabled is not None else before["disabled"]
    )
    if not still_admin:
        _keep_an_admin(conn, user_id, "demote or disable")
    conn.execute(sa.update(users).where(users.c.id == user_id).values(**values))
    return get_user(conn, user_id)


def delete_user(conn: Connection, user_id: int) -> None:
    """Delete a user and (by cascade) their API tokens; never the last enabled admin."""
    get_user(conn, user_id)
    _keep_an_admin(conn, user_id, "delete")
    conn.execute(sa.delete(users).where(users.c.id == user_id))


def _keep_an_admin(conn: Connection, user_id: int, action: str) -> None:
    """Refuse a change that would leave no enabled admin.

    The enabled admins are locked (``FOR UPDATE`` on PostgreSQL; SQLite's write
    transactions are serial anyway), so two admins demoting each other at the
    same moment cannot both succeed.
    """
    admins = conn.execute(
        sa.select(users.c.id)
        .where(users.c.role == Role.ADMIN.value, users.c.disabled.is_(False))
        .with_for_update()
    ).scalars()
    if set(admins) == {user_id}:
        raise Conflict(
            f"cannot {action} user {user_id}: it is the last enabled admin "
            "(create or enable another admin first)"
        )


def count_users(conn: Connection) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(users)).scalar_one())


def login(store: Store, username: str, password: str) -> Principal:
    """Check a username and password; count failures and lock after too many.

    The password check is slow on purpose, so it runs outside any transaction
    (on SQLite a write transaction would stall every other writer meanwhile).
    A failure is recorded in its own transaction *before* the error is raised
    (raising inside it would roll the count back). Unknown users, users without
    a password, disabled users and wrong passwords get the same answer after
    the same work.
    """
    row = None
    if re.fullmatch(USERNAME_PATTERN, username or ""):
        with store.read() as conn:
            row = conn.execute(sa.select(users).where(users.c.username == username)).first()
    now = utcnow()
    if row is not None and row.locked_until is not None and row.locked_until > now:
        wait = int((row.locked_until - now).total_seconds()) + 1
        raise TooManyAttempts(f"too many failed logins; try again in {wait}s", wait)
    if row is None or not row.password_hash:
        _burn_verify(password)
        ok = False
    else:
        ok = verify_password(password, row.password_hash) and not row.disabled
    if row is None:
        raise AuthError("wrong username or password")
    with store.write() as conn:
        if not ok:
            _count_failure(conn, row.id)
        elif row.failed_logins:
            conn.execute(sa.update(users).where(users.c.id == row.id).values(failed_logins=0))
    if not ok:
        raise AuthError("wrong username or password")
    return Principal(row.id, row.username, Role(row.role), "jwt")


def _count_failure(conn: Connection, user_id: int) -> None:
    # One atomic increment: parallel guesses cannot overwrite each other's count.
    failed = conn.execute(
        sa.update(users)
        .where(users.c.id == user_id)
        .values(failed_logins=users.c.failed_logins + 1)
        .returning(users.c.failed_logins)
    ).scalar()
    if failed is not None and failed >= MAX_FAILED_LOGINS:
        conn.execute(
            sa.update(users)
            .where(users.c.id == user_id)
            .values(locked_until=utcnow() + dt.timedelta(seconds=LOCK_SECONDS), failed_logins=0)
        )


# -- JWT ---------------------------------------------------------------------


def issue_jwt(principal: Principal, secret: str, ttl_seconds: int) -> tuple[str, int]:
    import jwt

    now = utcnow()
    payload = {
        "sub": str(principal.user_id),
        "name": principal.username,
        "role": principal.role.value,
        # fractional NumericDate: compared with tokens_valid_after to the millisecond
        "iat": round(now.timestamp(), 3),
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
    sub = str(claims["sub"])
    if not sub.isdigit() or int(sub) > MAX_ID:
        raise AuthError("invalid token")
    r = conn.execute(sa.select(users).where(users.c.id == int(sub))).first()
    if r is None or r.disabled:
        raise AuthError("the token's user no longer exists or is disabled")
    iat = claims.get("iat")
    if r.tokens_valid_after is not None and (
        not isinstance(iat, int | float) or iat < r.tokens_valid_after.timestamp() - 0.0005
    ):
        raise AuthError("the token was issued before the password changed; log in again")
    return Principal(r.id, r.username, Role(r.role), "jwt")


# -- API tokens ------------------------------------------------------------------


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_api_token(
    conn: Connection, user_id: int, name: str, expires_in_days: int | None = None
) -> tuple[dict[str, Any], str]:
    """Create a token; returns (its record, the token itself — shown only now)."""
    get_user(conn, user_id)
    if not name or len(name) > 128 or _CONTROL_RE.search(name):
        raise InvalidInput(
            "token name must be 1 to 128 characters, without control characters",
            [{"path": "name", "reason": "1 to 128 printable characters"}],
        )
    if expires_in_days is not None and not 1 <= expires_in_days <= MAX_TOKEN_DAYS:
        raise InvalidInput(
            f"expires_in_days must be between 1 and {MAX_TOKEN_DAYS} (omit it for no expiry)",
            [{"path": "expires_in_days", "reason": f"1 to {MAX_TOKEN_DAYS}"}],
        )
    tid = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    now = utcnow()
    expires = now + dt.timedelta(days=expires_in_days) if expires_in_days is not None else None
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
        "username": r.username,
        "name": r.name,
        "created_at": r.created_at,
        "expires_at": r.expires_at,
        "last_used_at": r.last_used_at,
        "revoked": r.revoked_at is not None,
    }


def _tokens_query() -> sa.Select[Any]:
    return sa.select(api_tokens, users.c.username).join(users, users.c.id == api_tokens.c.user_id)


def get_api_token(conn: Connection, token_id: str) -> dict[str, Any]:
    """One token's record (never its hash)."""
    r = None
    if re.fullmatch(TOKEN_ID_PATTERN, token_id):
        r = conn.execute(_tokens_query().where(api_tokens.c.id == token_id)).first()
    if r is None:
        raise NotFound(f"no API token {token_id!r}")
    return _token_dict(r)


def list_api_tokens(conn: Connection, user_id: int | None = None) -> list[dict[str, Any]]:
    """Every token's record, or one user's; oldest first."""
    q = _tokens_query().order_by(api_tokens.c.created_at, api_tokens.c.id)
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
    m = _API_TOKEN_RE.fullmatch(token)
    if m is None:
        raise AuthError("invalid token")
    tid, secret = m.groups()
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
    return Principal(r.user_id, r.username, Role(r.role), "api_token", token_id=r.id)


def touch_api_token(conn: Connection, token_id: str) -> None:
    conn.execute(
        sa.update(api_tokens).where(api_tokens.c.id == token_id).values(last_used_at=utcnow())
    )

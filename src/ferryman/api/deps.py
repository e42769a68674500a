"""FastAPI dependencies: the store, the settings and who is calling."""

from __future__ import annotations

import logging
import time
from typing import Annotated

import sqlalchemy as sa
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ferryman.home_secrets import LazySecret
from ferryman.services.auth import (
    TOKEN_PREFIX,
    AuthError,
    Principal,
    Role,
    principal_from_api_token,
    principal_from_jwt,
    touch_api_token,
)
from ferryman.services.runs import RunService
from ferryman.settings import Settings
from ferryman.store.engine import Store

log = logging.getLogger(__name__)

_bearer = HTTPBearer(auto_error=False, description="JWT from POST /token, or an API token")
# How often (at most) a token's last_used_at is written: often enough to see
# which tokens are alive, rarely enough not to turn reads into writes.
TOUCH_EVERY_SECONDS = 60.0


async def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_runs(request: Request) -> RunService:
    service: RunService = request.app.state.runs
    return service


def jwt_secret_of(request: Request) -> str:
    """The secret signing this app's access tokens (loaded on first use)."""
    secret: LazySecret = request.app.state.jwt_secret
    return secret.value


StoreDep = Annotated[Store, Depends(get_store)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
RunsDep = Annotated[RunService, Depends(get_runs)]


_Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def principal_of(request: Request, creds: HTTPAuthorizationCredentials | None) -> Principal:
    """Who is calling: from a JWT or an API token in ``Authorization: Bearer``."""
    if creds is None or not creds.credentials:
        raise AuthError("authentication required: send 'Authorization: Bearer <token>'")
    store: Store = request.app.state.store
    token = creds.credentials
    with store.read() as conn:
        if token.startswith(TOKEN_PREFIX):
            principal = principal_from_api_token(conn, token)
        else:
            principal = principal_from_jwt(conn, token, jwt_secret_of(request))
    if principal.token_id is not None:
        _touch(request, store, principal.token_id)
    return principal


def _touch(request: Request, store: Store, token_id: str) -> None:
    """Record that an API token was used, at most once a minute per process."""
    seen: dict[str, float] | None = getattr(request.app.state, "token_touches", None)
    if seen is None:
        seen = request.app.state.token_touches = {}
    now = time.monotonic()
    if now - seen.get(token_id, -TOUCH_EVERY_SECONDS) < TOUCH_EVERY_SECONDS:
        return
    seen[token_id] = now
    try:
        with store.write() as conn:
            touch_api_token(conn, token_id)
    except sa.exc.SQLAlchemyError:  # bookkeeping only: never fail the request for it
        log.warning("could not record the use of API token %s", token_id, exc_info=True)


def _require(role: Role):  # type: ignore[no-untyped-def]
    # One dependency per role, reading the store and settings from the app
    # itself: a chain of small dependencies costs a thread hop and a solver
    # step each, on every request (and time to build every route at start-up).
    def dep(request: Request, creds: _Credentials) -> Principal:
        principal = principal_of(request, creds)
        principal.require(role)
        return principal

    return dep


Viewer = Annotated[Principal, Depends(_require(Role.VIEWER))]
Operator = Annotated[Principal, Depends(_require(Role.OPERATOR))]
#: Registers pipeline code: whoever may do it runs code on the workers.
Developer = Annotated[Principal, Depends(_require(Role.DEVELOPER))]
Admin = Annotated[Principal, Depends(_require(Role.ADMIN))]

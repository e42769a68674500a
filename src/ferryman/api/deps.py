"""FastAPI dependencies: the store, the settings and who is calling."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ferryman.services.auth import (
    TOKEN_PREFIX,
    AuthError,
    Principal,
    Role,
    principal_from_api_token,
    principal_from_jwt,
)
from ferryman.services.runs import RunService
from ferryman.settings import Settings
from ferryman.store.engine import Store

_bearer = HTTPBearer(auto_error=False, description="JWT from POST /token, or an API token")


def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_runs(request: Request) -> RunService:
    service: RunService = request.app.state.runs
    return service


StoreDep = Annotated[Store, Depends(get_store)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
RunsDep = Annotated[RunService, Depends(get_runs)]


def get_principal(
    store: StoreDep,
    settings: SettingsDep,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if creds is None or not creds.credentials:
        raise AuthError("authentication required: send 'Authorization: Bearer <token>'")
    token = creds.credentials
    with store.read() as conn:
        if token.startswith(TOKEN_PREFIX):
            return principal_from_api_token(conn, token)
        return principal_from_jwt(conn, token, settings.jwt_secret.get_secret_value())


def _require(role: Role):  # type: ignore[no-untyped-def]
    def dep(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        principal.require(role)
        return principal

    return dep


Viewer = Annotated[Principal, Depends(_require(Role.VIEWER))]
Operator = Annotated[Principal, Depends(_require(Role.OPERATOR))]
Admin = Annotated[Principal, Depends(_require(Role.ADMIN))]

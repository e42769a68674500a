"""``POST /token``: OAuth2 password form → JWT bearer token."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel

from ferryman.api.deps import SettingsDep, StoreDep, Viewer
from ferryman.services.auth import issue_jwt, login

router = APIRouter(tags=["auth"])


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int


class Me(BaseModel):
    id: int
    username: str
    role: str
    via: str


@router.post(
    "/token",
    response_model=TokenOut,
    summary="Log in: username + password → JWT",
    responses={
        401: {"description": "wrong username or password"},
        429: {"description": "too many failed logins; see Retry-After"},
    },
)
def token(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    store: StoreDep,
    settings: SettingsDep,
) -> TokenOut:
    principal = login(store, form.username, form.password)
    jwt, ttl = issue_jwt(
        principal, settings.jwt_secret.get_secret_value(), settings.jwt_ttl_seconds
    )
    return TokenOut(access_token=jwt, expires_in=ttl)


@router.get("/me", response_model=Me, summary="Who am I")
def me(principal: Viewer) -> Me:
    return Me(id=principal.user_id, username=principal.username, role=principal.role.value,
              via=principal.via)  # fmt: skip

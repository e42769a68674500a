"""``POST /token``: OAuth2 password form → JWT bearer token.

The route is a coroutine: it waits for the login gate (rates, a bounded
queue, a pool of hashing threads of its own) without holding a thread of the
pool every other route uses.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel

from ferryman.api.deps import SettingsDep, StoreDep, Viewer, jwt_secret_of
from ferryman.api.login_gate import LoginGate, client_address
from ferryman.services.auth import issue_jwt

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
        429: {
            "description": "locked after failed logins, too many logins, or the server is "
            "busy checking passwords; see Retry-After"
        },
    },
)
async def token(
    request: Request,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    store: StoreDep,
    settings: SettingsDep,
) -> TokenOut:
    gate: LoginGate = request.app.state.login_gate
    host = request.client.host if request.client else None
    principal = await gate.login(store, form.username, form.password, client_address(host))
    jwt, ttl = issue_jwt(principal, jwt_secret_of(request), settings.api.jwt_ttl_seconds)
    return TokenOut(access_token=jwt, expires_in=ttl)


@router.get("/me", response_model=Me, summary="Who am I")
def me(principal: Viewer) -> Me:
    return Me(id=principal.user_id, username=principal.username, role=principal.role.value,
              via=principal.via)  # fmt: skip

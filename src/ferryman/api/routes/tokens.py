"""Long-lived API tokens for machines: create (admins), list, get, revoke.

A token looks like ``fm_<id>_<secret>``. It is shown once, in the answer to
its creation; only a hash of the secret is stored and no route ever returns
it again.

Who may do what:

- **create**: admins only, for themselves or for any user (``user_id``).
  Machines get their credentials from an admin; a viewer or operator cannot
  mint long-lived credentials for themselves.
- **list / get**: admins see every token; other users see their own.
- **revoke**: the token's owner or an admin. Someone else's token answers 404,
  exactly like a token that does not exist, so ids cannot be probed.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from ferryman.api.accounts import ApiTokenCreate, ApiTokenCreated, ApiTokenPublic
from ferryman.api.deps import Admin, StoreDep, Viewer
from ferryman.errors import NotFound
from ferryman.services import auth
from ferryman.services.auth import Forbidden, Principal, Role

router = APIRouter(tags=["tokens"])

TokenId = Annotated[str, Path(max_length=64, description="The token's id (the part after fm_)")]


_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no such token (or not yours)"}}


def _visible(record: dict[str, object], principal: Principal) -> bool:
    return principal.role == Role.ADMIN or record["user_id"] == principal.user_id


@router.post(
    "/tokens",
    status_code=201,
    response_model=ApiTokenCreated,
    summary="Create an API token (admins); the token is shown only in this answer",
    responses={
        403: {"description": "only admins create tokens"},
        404: {"description": "no such user"},
    },
)
def create_token(body: ApiTokenCreate, principal: Admin, store: StoreDep) -> ApiTokenCreated:
    user_id = body.user_id if body.user_id is not None else principal.user_id
    with store.write() as conn:
        record, token = auth.create_api_token(conn, user_id, body.name, body.expires_in_days)
    return ApiTokenCreated(**record, token=token)


@router.get(
    "/tokens",
    response_model=list[ApiTokenPublic],
    summary="List API tokens: every one for admins, your own otherwise",
    responses={403: {"description": "only admins may list other users' tokens"}},
)
def list_tokens(
    principal: Viewer,
    store: StoreDep,
    user_id: Annotated[
        int | None, Query(ge=1, le=auth.MAX_ID, description="Only this user's tokens")
    ] = None,
) -> list[ApiTokenPublic]:
    if principal.role != Role.ADMIN:
        if user_id not in (None, principal.user_id):
            raise Forbidden("only admins may list other users' tokens")
        user_id = principal.user_id
    with store.read() as conn:
        return [ApiTokenPublic.model_validate(t) for t in auth.list_api_tokens(conn, user_id)]


@router.get(
    "/tokens/{token_id}",
    response_model=ApiTokenPublic,
    summary="Get an API token's record (yours, or any for admins)",
    responses=_NOT_FOUND,
)
def get_token(token_id: TokenId, principal: Viewer, store: StoreDep) -> ApiTokenPublic:
    with store.read() as conn:
        record = auth.get_api_token(conn, token_id)
    if not _visible(record, principal):
        raise NotFound(f"no API token {token_id!r}")
    return ApiTokenPublic.model_validate(record)


@router.delete(
    "/tokens/{token_id}",
    response_model=ApiTokenPublic,
    summary="Revoke an API token (yours, or any for admins); it stops working at once",
    responses=_NOT_FOUND,
)
def revoke_token(token_id: TokenId, principal: Viewer, store: StoreDep) -> ApiTokenPublic:
    with store.write() as conn:
        record = auth.get_api_token(conn, token_id)
        if not _visible(record, principal):
            raise NotFound(f"no API token {token_id!r}")
        record = auth.revoke_api_token(conn, token_id)
    return ApiTokenPublic.model_validate(record)

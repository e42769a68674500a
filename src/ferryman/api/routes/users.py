"""Users (admins only): list, create, read, change and delete.

Passwords are hashed (slowly, on purpose) before the write transaction opens,
so that a user change never holds the database's write lock for long. There is
always one enabled admin left: deleting, demoting or disabling the last one is
refused with 409.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Response

from ferryman.api.accounts import UserCreate, UserPublic, UserUpdate
from ferryman.api.deps import Admin, StoreDep
from ferryman.services import auth
from ferryman.services.auth import Role

router = APIRouter(tags=["users"])

UserId = Annotated[int, Path(ge=1, le=auth.MAX_ID, description="The user's numeric id")]


_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no such user"}}
_ADMIN_ONLY: dict[int | str, dict[str, Any]] = {403: {"description": "only admins manage users"}}


@router.get("/users", response_model=list[UserPublic], summary="List users", responses=_ADMIN_ONLY)
def list_users(_: Admin, store: StoreDep) -> list[UserPublic]:
    with store.read() as conn:
        return [UserPublic.model_validate(u) for u in auth.list_users(conn)]


@router.post(
    "/users",
    status_code=201,
    response_model=UserPublic,
    summary="Create a user",
    responses={**_ADMIN_ONLY, 409: {"description": "the username or Slack id is taken"}},
)
def create_user(body: UserCreate, _: Admin, store: StoreDep) -> UserPublic:
    auth.validate_username(body.username)
    hashed = (
        auth.hash_password(auth.validate_password(body.password))
        if body.password is not None
        else None
    )
    with store.write() as conn:
        user = auth.create_user(
            conn,
            body.username,
            None,
            Role(body.role),
            slack_user_id=body.slack_user_id,
            password_hash=hashed,
        )
    return UserPublic.model_validate(user)


@router.get(
    "/users/{user_id}",
    response_model=UserPublic,
    summary="Get a user",
    responses={**_ADMIN_ONLY, **_NOT_FOUND},
)
def get_user(user_id: UserId, _: Admin, store: StoreDep) -> UserPublic:
    with store.read() as conn:
        return UserPublic.model_validate(auth.get_user(conn, user_id))


@router.patch(
    "/users/{user_id}",
    response_model=UserPublic,
    summary="Change a user's password, role, Slack id or disabled flag",
    responses={
        **_ADMIN_ONLY,
        **_NOT_FOUND,
        409: {"description": "it would leave no enabled admin, or the Slack id is taken"},
    },
)
def update_user(user_id: UserId, body: UserUpdate, _: Admin, store: StoreDep) -> UserPublic:
    hashed = (
        auth.hash_password(auth.validate_password(body.password))
        if body.password is not None
        else None
    )
    slack: str | None = None
    if "slack_user_id" in body.model_fields_set:
        slack = body.slack_user_id or ""  # "" unlinks
    with store.write() as conn:
        user = auth.update_user(
            conn,
            user_id,
            role=Role(body.role) if body.role is not None else None,
            disabled=body.disabled,
            slack_user_id=slack,
            password_hash=hashed,
        )
    return UserPublic.model_validate(user)


@router.delete(
    "/users/{user_id}",
    status_code=204,
    response_class=Response,
    summary="Delete a user and their API tokens",
    responses={**_ADMIN_ONLY, **_NOT_FOUND, 409: {"description": "the last enabled admin"}},
)
def delete_user(user_id: UserId, _: Admin, store: StoreDep) -> Response:
    with store.write() as conn:
        auth.delete_user(conn, user_id)
    return Response(status_code=204)

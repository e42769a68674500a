"""Users and API tokens as the REST API shows and accepts them (shared by the
routes and the Python client: pydantic and the domain only, no FastAPI, no
services)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ferryman.domain import accounts as rules
from ferryman.domain.accounts import RoleName


def _password() -> Any:
    return Field(
        default=None,
        min_length=rules.MIN_PASSWORD_LENGTH,
        max_length=rules.MAX_PASSWORD_LENGTH,
        description="At least 8 characters; stored as an Argon2 hash",
    )


def _slack_id() -> Any:
    return Field(
        default=None,
        pattern=f"^{rules.SLACK_ID_PATTERN}$",
        description="The Slack member id (e.g. U012AB3CD), to act from Slack",
    )


class UserPublic(BaseModel):
    """A user as the API shows it (never the password hash)."""

    id: int
    username: str
    role: RoleName
    slack_user_id: str | None
    disabled: bool
    created_at: dt.datetime


class UserCreate(BaseModel):
    """A new user. Without a password the user can only use API tokens (or Slack)."""

    model_config = ConfigDict(extra="forbid")

    username: str = Field(
        pattern=f"^{rules.USERNAME_PATTERN}$",
        description="Letters, digits, '_', '.', '@' or '-', starting with a letter or digit",
    )
    password: str | None = _password()
    role: RoleName
    slack_user_id: str | None = _slack_id()


class UserUpdate(BaseModel):
    """A change to a user: only the fields sent change; ``slack_user_id: null`` unlinks Slack."""

    model_config = ConfigDict(extra="forbid")

    password: str | None = _password()
    role: RoleName | None = None
    disabled: bool | None = Field(
        default=None, description="A disabled user can neither log in nor use tokens"
    )
    slack_user_id: str | None = _slack_id()


class ApiTokenPublic(BaseModel):
    """An API token's record. Never the token itself, never its hash."""

    id: str
    user_id: int
    username: str
    name: str
    created_at: dt.datetime
    expires_at: dt.datetime | None
    last_used_at: dt.datetime | None = Field(description="Updated at most once a minute")
    revoked: bool


class ApiTokenCreated(ApiTokenPublic):
    """A new token's record plus the token itself: shown only this once."""

    token: str = Field(
        description="Send as 'Authorization: Bearer <token>'. Store it now: it is not shown again"
    )


class ApiTokenCreate(BaseModel):
    """A new API token."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        min_length=1,
        max_length=128,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="What the token is for, e.g. 'ci-deploy'",
    )
    user_id: int | None = Field(
        default=None, ge=1, le=rules.MAX_ID, description="Whose token (default: yours)"
    )
    expires_in_days: int | None = Field(
        default=None, ge=1, le=rules.MAX_TOKEN_DAYS, description="Default: never expires"
    )

"""Accounts as data: roles and the limits and shapes of usernames, passwords,
Slack ids and API tokens.

Pure (no database, no web framework): the services check these rules, and the
REST API's wire models (used by the Python client too) declare them, from one
place.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal


class Role(StrEnum):
    """What a user may do, each role including the ones before it: viewers
    read; operators also run registered pipelines (start, cancel, re-run);
    developers also register pipeline code, which runs on the workers;
    admins also manage users, tokens and subscriptions."""

    ADMIN = "admin"
    DEVELOPER = "developer"
    OPERATOR = "operator"
    VIEWER = "viewer"

    def allows(self, needed: Role) -> bool:
        """Whether this role includes ``needed`` (admin > developer > operator > viewer)."""
        return _ORDER[self] >= _ORDER[needed]


_ORDER = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.DEVELOPER: 2, Role.ADMIN: 3}

#: The role names as a type, for wire models (see ``Role``).
RoleName = Literal["admin", "developer", "operator", "viewer"]

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024
MAX_TOKEN_DAYS = 3650
MAX_ID = 2**31 - 1  # ids are 32-bit integers on PostgreSQL
USERNAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}"
SLACK_ID_PATTERN = r"[A-Za-z0-9]{1,64}"
TOKEN_PREFIX = "fm_"
TOKEN_ID_PATTERN = r"[0-9a-f]{1,32}"

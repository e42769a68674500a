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
    """What a user may do: admins manage users; operators run; viewers read."""

    ADMIN = "admin"
    OPERATOR = "operator"
    VIEWER = "viewer"

    def allows(self, needed: Role) -> bool:
        """Whether this role includes ``needed`` (admin > operator > viewer)."""
        order = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}
        return order[self] >= order[needed]


#: The role names as a type, for wire models: admins manage users and tokens;
#: operators also run; viewers read.
RoleName = Literal["admin", "operator", "viewer"]

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024
MAX_TOKEN_DAYS = 3650
MAX_ID = 2**31 - 1  # ids are 32-bit integers on PostgreSQL
USERNAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}"
SLACK_ID_PATTERN = r"[A-Za-z0-9]{1,64}"
TOKEN_PREFIX = "fm_"
TOKEN_ID_PATTERN = r"[0-9a-f]{1,32}"

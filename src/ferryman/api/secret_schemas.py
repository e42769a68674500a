"""Wire models of the secret store API (``/secrets``), shared with the client.

A value goes in (``SecretSet``) and never comes out: what is returned is
the name, when it was set and by whom (``SecretPublic``).
"""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class SecretSet(BaseModel):
    """The body of ``PUT /secrets/{name}``."""

    model_config = ConfigDict(extra="forbid")

    value: SecretStr = Field(description="The value (stored encrypted; never returned)")


class SecretPublic(BaseModel):
    """A stored secret, without its value."""

    name: str
    created_at: dt.datetime
    updated_at: dt.datetime
    updated_by: str | None = None
    created: bool | None = Field(
        default=None, description="On PUT: whether the secret was new (else replaced)"
    )


class SecretList(BaseModel):
    """``GET /secrets``: every stored secret, by name."""

    items: list[SecretPublic]

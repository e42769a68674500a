"""What both clients share: the server's address and the bearer token."""

from __future__ import annotations

from collections.abc import Mapping

#: Seconds to wait for an answer (log streams wait longer between lines).
DEFAULT_TIMEOUT = 30.0


class ClientBase:
    """The server's base URL and the token sent with every request."""

    def __init__(self, base_url: str, token: str | None) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token

    @property
    def token(self) -> str | None:
        """The bearer token sent with every request (a JWT or an API token)."""
        return self._token

    @token.setter
    def token(self, value: str | None) -> None:
        self._token = value

    def auth_headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """``extra`` plus the ``Authorization`` header, when there is a token."""
        headers = dict(extra or {})
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

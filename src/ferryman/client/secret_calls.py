"""The requests of the secret store API (admins): ``Client.send(SecretCalls.…)``."""

from __future__ import annotations

from ferryman.api.secret_schemas import SecretList, SecretPublic
from ferryman.client.calls import Call, segment


class SecretCalls:
    """Set, list and remove stored secrets. No request returns a value."""

    @staticmethod
    def list_secrets() -> Call[SecretList]:
        return Call("GET", "/secrets", SecretList)

    @staticmethod
    def set_secret(name: str, value: str) -> Call[SecretPublic]:
        return Call("PUT", f"/secrets/{segment(name)}", SecretPublic, json={"value": value})

    @staticmethod
    def delete_secret(name: str) -> Call[None]:
        return Call("DELETE", f"/secrets/{segment(name)}", None)

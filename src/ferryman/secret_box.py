"""Secrets at rest: what ferryman must keep to use later (a subscription's
signing secret and header values; later the secrets of schedules) is stored
encrypted, never in plain text.

``SecretBox.seal`` turns a text into ``fmbox1:<Fernet token>`` (AES-128-CBC
and HMAC-SHA256, from the ``cryptography`` package; see
docs/decisions/0009-secrets-at-rest.md); ``open`` turns it back, and returns
a text that was never sealed as it is (rows written before encryption, until
the migration or ``ferryman db reseal`` seals them).

The key: ``FERRYMAN_SECRET_KEY``, else one generated per home
(``FERRYMAN_HOME/secret_key``, mode 0600, made like the access-token secret
in ``ferryman.home_secrets``). Production on PostgreSQL requires the
setting: every server and worker sharing the database must use the same
key. Several keys, comma-separated, rotate: the first seals, each opens;
``ferryman db reseal`` then seals every stored secret with the first, after
which the others can go.

Keys are any strong text (the rule of ``Settings.check_jwt_secret``); the
Fernet key is derived from each with HKDF-SHA256. ``cryptography`` is
imported on first use: most commands never need it.
"""

from __future__ import annotations

import base64
import secrets
import threading
from collections.abc import Callable, Sequence
from typing import Any

from ferryman.home_secrets import load_or_create
from ferryman.settings import Settings

PREFIX = "fmbox1:"
SECRET_KEY_FILE = "secret_key"
_INFO = b"ferryman secret box v1"


class SecretBoxError(Exception):
    """A sealed value cannot be opened (another key sealed it), or no key is known."""


def _fernet_key(key: str) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    raw = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(key.encode())
    return base64.urlsafe_b64encode(raw)


def is_sealed(value: object) -> bool:
    """Whether ``value`` is a text ``seal`` made."""
    return isinstance(value, str) and value.startswith(PREFIX)


class SecretBox:
    """Seals and opens texts with the first of its keys (any of them opens).

    ``keys`` is loaded on first use, once (``load`` returns them): a box made
    for a process that never touches a secret reads no key file.
    """

    def __init__(self, load: Callable[[], Sequence[str]]) -> None:
        self._load = load
        self._fernet: Any = None
        self._lock = threading.Lock()

    @classmethod
    def of(cls, *keys: str) -> SecretBox:
        """A box of these keys (the first seals)."""
        return cls(lambda: keys)

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        """``FERRYMAN_SECRET_KEY`` (comma-separated keys), else the home's key."""
        return cls(lambda: secret_keys(settings))

    def _crypt(self) -> Any:
        if self._fernet is None:
            with self._lock:
                if self._fernet is None:
                    from cryptography.fernet import Fernet, MultiFernet

                    keys = [k for k in self._load() if k]
                    if not keys:
                        raise SecretBoxError("no secret key: set FERRYMAN_SECRET_KEY")
                    self._fernet = MultiFernet([Fernet(_fernet_key(k)) for k in keys])
        return self._fernet

    def seal(self, text: str) -> str:
        """``text`` encrypted with the first key (a sealed text stays as it is)."""
        if is_sealed(text):
            return text
        token: bytes = self._crypt().encrypt(text.encode("utf-8"))
        return PREFIX + token.decode("ascii")

    def open(self, value: str) -> str:
        """The text ``seal`` sealed; a text that was never sealed as it is."""
        if not is_sealed(value):
            return value
        from cryptography.fernet import InvalidToken

        try:
            data: bytes = self._crypt().decrypt(value[len(PREFIX) :].encode("ascii"))
        except (InvalidToken, ValueError):
            raise SecretBoxError(
                "a stored secret cannot be decrypted with FERRYMAN_SECRET_KEY (or the home's "
                "secret_key): every server and worker sharing a database needs the same key; "
                "when rotating, list the old key after the new one"
            ) from None
        return data.decode("utf-8")

    def reseal(self, value: str) -> str:
        """``value`` sealed with the first key (opened with whichever sealed it)."""
        return self.seal(self.open(value))


class NoKey(SecretBox):
    """The box of a store opened without settings: it reads texts that were
    never sealed and refuses everything else, with a clear message."""

    def __init__(self) -> None:
        super().__init__(lambda: ())

    def _crypt(self) -> Any:
        raise SecretBoxError(
            "this database connection has no secret key (open the store with "
            "Store.from_settings, or pass secret_box=)"
        )


def secret_key_path(settings: Settings) -> Any:
    """Where the home's generated key lives."""
    return settings.home / SECRET_KEY_FILE


def _check_stored_key(key: str) -> None:
    try:
        Settings.check_jwt_secret(key)
    except ValueError:
        raise ValueError(
            "not a key ferryman generated (too weak): set FERRYMAN_SECRET_KEY, or restore the "
            "file (deleting it makes stored secrets unreadable)"
        ) from None


def secret_keys(settings: Settings) -> list[str]:
    """The configured keys (first seals), else the home's, generated now if needed."""
    if settings.security.secret_key is not None:
        settings.check_secret_key()
        return [
            k.strip()
            for k in settings.security.secret_key.get_secret_value().split(",")
            if k.strip()
        ]
    key, _ = load_or_create(
        secret_key_path(settings), lambda: secrets.token_urlsafe(48), _check_stored_key
    )
    return [key]

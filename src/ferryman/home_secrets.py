"""Secrets generated once per installation and kept under ``FERRYMAN_HOME``.

A secret that is not configured is generated on first use and written to a
private file (mode 0600) of the home, so it survives restarts and every
process on the same home — server, CLI — reads the same one. Creation is
race-free across processes: the secret goes to a private temporary file
first, which is then hard-linked into place; ``link`` fails if another
process won, and the loser reads the winner's secret. Secrets are never
logged.

Two secrets live here: the one signing access tokens (``jwt_secret``) and,
through ``ferryman.notify.signing``, the one signing webhooks. Servers on
several machines (sharing one PostgreSQL) each have their own home, so they
must be given the same configured secrets instead.
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Callable
from pathlib import Path

from ferryman.settings import Settings

JWT_SECRET_FILE = "jwt_secret"


def load_or_create(
    path: Path, generate: Callable[[], str], check: Callable[[str], object]
) -> tuple[str, bool]:
    """The secret stored at ``path``, or a new one from ``generate`` stored there.

    Returns ``(secret, created)``. ``check`` raises ``ValueError`` for a stored
    value that must not be used (a damaged or hand-edited file): that stops
    the caller instead of silently replacing a secret others rely on.
    """
    existing = _read(path, check)
    if existing is not None:
        return existing, False
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # the home: private
    secret = generate()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secret + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # atomic and exclusive: the file is never half-written
        except FileExistsError:
            winner = _read(path, check)
            if winner is None:
                raise
            return winner, False
    finally:
        tmp.unlink(missing_ok=True)
    return secret, True


def _read(path: Path, check: Callable[[str], object]) -> str | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    try:
        check(text)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return text


def jwt_secret_path(settings: Settings) -> Path:
    return settings.home / JWT_SECRET_FILE


def _check_stored_jwt_secret(secret: str) -> None:
    try:
        Settings.check_jwt_secret(secret)
    except ValueError:
        # Only ferryman writes this file: anything weak in it was put there by hand.
        raise ValueError(
            "not a secret ferryman generated (too weak); delete the file to have a new one "
            "generated, or set FERRYMAN_JWT_SECRET"
        ) from None


def load_or_create_jwt_secret(settings: Settings) -> tuple[str, bool]:
    """The secret signing access tokens: ``FERRYMAN_JWT_SECRET`` when set, else
    the home's (generated now if needed). Returns ``(secret, created)``."""
    if settings.api.jwt_secret is not None:
        return settings.api.jwt_secret.get_secret_value(), False
    return load_or_create(
        jwt_secret_path(settings), lambda: secrets.token_urlsafe(48), _check_stored_jwt_secret
    )


def jwt_secret(settings: Settings) -> str:
    """The secret signing access tokens (see ``load_or_create_jwt_secret``)."""
    return load_or_create_jwt_secret(settings)[0]


class LazySecret:
    """A secret loaded on first use, once (an app built only to read its
    OpenAPI document never touches the home)."""

    def __init__(self, load: Callable[[], str]) -> None:
        self._load = load
        self._value: str | None = None
        self._lock = threading.Lock()

    @property
    def value(self) -> str:
        if self._value is None:
            with self._lock:
                if self._value is None:
                    self._value = self._load()
        return self._value

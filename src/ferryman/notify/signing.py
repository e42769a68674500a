"""Standard Webhooks signatures (https://www.standardwebhooks.com/).

Every outbound webhook carries three headers:

- ``webhook-id``: a stable id of the message; the same on every retry, so a
  receiver can de-duplicate (delivery is at-least-once);
- ``webhook-timestamp``: Unix seconds of *this* attempt (receivers reject
  stale timestamps, so a retry hours later is signed afresh);
- ``webhook-signature``: ``v1,`` + base64(HMAC-SHA256(key, "{id}.{ts}.{body}"))
  where ``key`` is the base64-decoded part of the ``whsec_…`` secret.

Receivers verify with any off-the-shelf Standard Webhooks library. Written
with the standard library only (``hmac``, ``hashlib``, ``base64``).

The signing secret is ``FERRYMAN_WEBHOOK_SECRET`` when set. Otherwise ferryman
generates one per installation on first use and keeps it in
``FERRYMAN_HOME/webhook_secret`` (mode 0600), so callbacks are *always*
signed and the secret survives restarts (``ferryman.home_secrets``). Several
servers on several machines must share a configured secret (each home would
otherwise hold its own).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from pathlib import Path

from ferryman.home_secrets import load_or_create
from ferryman.settings import Settings

SECRET_PREFIX = "whsec_"
SECRET_FILE = "webhook_secret"
_KEY_BYTES = 32  # 256-bit keys (the scheme allows 24 to 64 bytes)


class SecretError(ValueError):
    """A webhook secret that is not ``whsec_`` + base64 of at least 16 bytes."""


def generate_secret() -> str:
    """A fresh random secret in the ``whsec_<base64>`` format."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(_KEY_BYTES)).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The HMAC key of ``secret`` (``whsec_`` prefix optional, base64 body)."""
    body = secret.strip()
    if body.startswith(SECRET_PREFIX):
        body = body[len(SECRET_PREFIX) :]
    try:
        key = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise SecretError(
            "the webhook secret must look like whsec_<base64> (see `ferryman` docs on "
            "FERRYMAN_WEBHOOK_SECRET)"
        ) from None
    if len(key) < 16:
        raise SecretError("the webhook secret is too short: use at least 16 random bytes")
    return key


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value for ``body`` (exactly the bytes sent)."""
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode("ascii")


def signed_headers(
    key: bytes, msg_id: str, body: bytes, *, timestamp: int | None = None
) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(key, msg_id, ts, body),
    }


def secret_path(settings: Settings) -> Path:
    return settings.home / SECRET_FILE


def load_or_create_secret(settings: Settings) -> tuple[str, bool]:
    """The signing secret: configured, stored, or generated now and stored
    (race-free across processes sharing a home; see ``ferryman.home_secrets``).

    Returns ``(secret, created)``. Never logs the secret.
    """
    if settings.callbacks.webhook_secret is not None:
        secret = settings.callbacks.webhook_secret.get_secret_value()
        try:
            secret_key(secret)  # validate early: a bad secret is a start-up error
        except SecretError as exc:
            raise SecretError(f"FERRYMAN_WEBHOOK_SECRET: {exc}") from None
        return secret, False
    try:
        return load_or_create(secret_path(settings), generate_secret, secret_key)
    except ValueError as exc:  # the stored file is bad: still a SecretError for callers
        raise SecretError(str(exc)) from None

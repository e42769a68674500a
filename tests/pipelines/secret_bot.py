"""An API bot whose step declares a secret, and tries every way to leak it:
printed as it is, encoded, in its output, in its error. Used by
tests/integration/test_secrets_end_to_end.py (steps run in real processes)."""

from __future__ import annotations

import base64
import sys

from ferryman import pipeline, secret, step
from ferryman.http import api_call


@step(secrets=["CAST_API_KEY"])
def call_api(url: str) -> dict[str, object]:
    key = secret("CAST_API_KEY")
    print("the key object:", key, repr(key))
    print("the key itself:", key.reveal())
    print("hex", key.reveal().encode().hex(), "b64", base64.b64encode(key.reveal().encode()))
    print(f"Authorization: Bearer {key.reveal()}", file=sys.stderr)
    answer = api_call("POST", url, json={"cast": 42}, secret=key, idempotency_key="cast-42")
    return {"status": answer.status, "echo": key.reveal(), "nested": [{"k": key.reveal()}]}


@step(secrets=["CAST_API_KEY"])
def complain(result: dict[str, object]) -> None:
    raise RuntimeError(f"the API refused key {secret('CAST_API_KEY').reveal()}")


@pipeline
def secret_bot(url: str) -> None:
    complain(call_api(url))

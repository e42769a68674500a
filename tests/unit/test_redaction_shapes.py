"""The redactor's token shapes as a table: what is masked, and what stays."""

from __future__ import annotations

import pytest

from ferryman.redaction import MASK, SHAPES_ONLY, Redactor

PEM = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n"
    "-----END OPENSSH PRIVATE KEY-----"
)

# (what, text, expected after masking)
MASKED = [
    ("slack bot", "token=xoxb-123456789012-1234567890123-AbCdEfGh", f"token={MASK}"),
    ("slack user", "xoxp-1234567890-abcdefghij", MASK),
    ("slack app", "app xapp-1-A0123456789-1234567890123-abc", f"app {MASK}"),
    ("slack refresh", "xoxe-1-abcdefghijklmnop", "xoxe-1-abcdefghijklmnop"),  # not a shape
    ("github classic", "ghp_" + "a1B2c3D4e5" * 4, MASK),
    ("github oauth", "gho_" + "Z" * 36, MASK),
    ("github app", "ghs_" + "9" * 36, MASK),
    ("github fine-grained", "github_pat_11ABCDEFG0123456789_abcdefghij", MASK),
    ("aws key id", "aws_access_key_id = AKIAIOSFODNN7EXAMPLE", f"aws_access_key_id = {MASK}"),
    ("aws temporary", "ASIAIOSFODNN7EXAMPLE", MASK),
    ("stripe", "sk_live_" + "a1" * 12, MASK),
    ("google", "key=AIza" + "SyA-1234567890abcdefghijklmnopqrstu", f"key={MASK}"),
    ("pem", f"key:\n{PEM}\nafter", f"key:\n{MASK}\nafter"),
    ("bearer header", "Authorization: Bearer abc123.def-456", f"Authorization: Bearer {MASK}"),
    ("bearer lower", "authorization: bearer sk-proj-ABCDEF123456", f"authorization: bearer {MASK}"),
    ("bearer in curl", 'curl -H "Authorization: Bearer t0k3n-value-1"',
     f'curl -H "Authorization: Bearer {MASK}"'),
    ("basic header", "Authorization: Basic dXNlcjpwYXNzd29yZA==", f"Authorization: Basic {MASK}"),
    ("jwt", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9",
     MASK),
    ("webhook secret", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", MASK),
]  # fmt: skip

UNTOUCHED = [
    "the bearer document is signed",  # a word, not a token
    "Bearer short",  # too short to be a token
    "a basic configuration for Basic users",
    "AKIA is a prefix",  # too short
    "ghp_short",
    "-----BEGIN PUBLIC KEY-----",  # public keys are not secret
    "sk_test_abcdefghijklmnop",  # a test key, not a live one
    "an ordinary log line: 42 rows in 0.3 s",
]


@pytest.mark.parametrize(("what", "text", "expected"), MASKED, ids=[m[0] for m in MASKED])
def test_token_shapes_are_masked(what: str, text: str, expected: str) -> None:
    assert SHAPES_ONLY.text(text) == expected
    if "\n" not in text:
        assert SHAPES_ONLY.line(text) == expected


@pytest.mark.parametrize("text", UNTOUCHED)
def test_innocent_text_stays(text: str) -> None:
    assert SHAPES_ONLY.text(text) == text
    assert SHAPES_ONLY.line(text) == text


def test_exact_values_and_shapes_together() -> None:
    r = Redactor.of(["CAST-key-1234567890"])
    text = "GET /x key=CAST-key-1234567890 Authorization: Bearer other-token-99"
    assert r.text(text) == f"GET /x key={MASK} Authorization: Bearer {MASK}"
    assert r.value({"headers": {"authorization": "Bearer CAST-key-1234567890"}}) == {
        "headers": {"authorization": f"Bearer {MASK}"}
    }

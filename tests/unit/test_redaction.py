"""The one redactor (issue 11, item 7): every form of a secret a step could
print, and the cost per log line."""

from __future__ import annotations

import base64
import binascii
import secrets
import time
from urllib.parse import quote

import pytest

from ferryman.redaction import MASK, MIN_FRAGMENT, SHAPES_ONLY, Redactor, redact

SECRET = "s3cr3t-Value_with+odd/chars=42"
OTHER = "another-secret-value-0123456789"


@pytest.fixture
def r() -> Redactor:
    return Redactor.of([SECRET, OTHER])


def b64_forms(value: str) -> list[str]:
    raw = value.encode()
    out = []
    for shift in range(3):
        for prefix in (b"", b"x" * shift):
            for tail in (b"", b"!", b"!?"):
                data = prefix + raw + tail
                for enc in (base64.b64encode, base64.urlsafe_b64encode):
                    text = enc(data).decode()
                    out += [text, text.rstrip("=")]
    return out


def test_exact_and_case_forms(r: Redactor) -> None:
    for form in (SECRET, SECRET.upper(), SECRET.lower(), SECRET.swapcase()):
        out = r.line(f"token={form}; done")
        assert form not in out and out == f"token={MASK}; done", form


@pytest.mark.parametrize("encoded", b64_forms(SECRET))
def test_base64_at_every_alignment_and_alphabet(r: Redactor, encoded: str) -> None:
    out = r.line(f"Authorization: Basic {encoded}")
    assert MASK in out
    # what survives encodes the neighbouring bytes, plus at most two
    # characters at each end that mix the secret's bits with theirs
    kept = out.split("Basic ", 1)[1].replace(MASK, "")
    alone = len(base64.b64encode(SECRET.encode()).rstrip(b"="))
    assert len(encoded) - len(kept) >= alone - 4, (encoded, out)


def test_hex_and_percent_forms(r: Redactor) -> None:
    raw = SECRET.encode()
    for form in (binascii.hexlify(raw).decode(), binascii.hexlify(raw).decode().upper()):
        assert r.line(f"hex {form}") == f"hex {MASK}"
    assert r.line(f"url ?t={quote(SECRET, safe='')}&x") == f"url ?t={MASK}&x"


def test_a_secret_split_over_a_line_break(r: Redactor) -> None:
    for cut in range(MIN_FRAGMENT, len(SECRET) - MIN_FRAGMENT + 1):
        head, tail = SECRET[:cut], SECRET[cut:]
        first, second = r.line(f"the token is {head}"), r.line(f"{tail} and more")
        assert head not in first and tail not in second, cut
        assert first == f"the token is {MASK}" and second == f"{MASK} and more"
    # split over three lines: the middle one is a piece of the secret
    assert r.line(SECRET[8:20]) == MASK
    # pieces shorter than MIN_FRAGMENT are not recognised (the documented bound)
    assert r.line(f"ends with {SECRET[: MIN_FRAGMENT - 1]}").endswith(SECRET[: MIN_FRAGMENT - 1])


def test_token_shapes_without_declared_secrets() -> None:
    shapes = {
        "slack": "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
        "slack user": "xoxp-1234567890-abcdefghij",
        "github": "ghp_" + "A1b2C3d4E5" * 4,
        "github fine-grained": "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
        "aws": "AKIAIOSFODNN7EXAMPLE",
        "webhook": "whsec_" + base64.b64encode(b"k" * 24).decode(),
        "ferryman": "fm_0123abcd_" + "Z" * 43,
        "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
        "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    }
    for name, token in shapes.items():
        out = SHAPES_ONLY.line(f"leak: {token} end")
        assert token not in out and out == f"leak: {MASK} end", name
        assert SHAPES_ONLY.text(f"a\n{token}\nb") == f"a\n{MASK}\nb", name


def test_pem_private_keys_in_text_and_across_lines() -> None:
    block = (
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAuHk\nq8Rk0z1h\n"
        "-----END RSA PRIVATE KEY-----"
    )
    assert SHAPES_ONLY.text(f"key:\n{block}\nafter") == f"key:\n{MASK}\nafter"
    lines = SHAPES_ONLY.lines()
    shown = [lines(line) for line in f"before\n{block}\nafter".split("\n")]
    assert shown == ["before", MASK, MASK, MASK, MASK, "after"]
    public = "-----BEGIN PUBLIC KEY-----"
    assert SHAPES_ONLY.line(public) == public  # only private keys


def test_values_keys_and_nesting(r: Redactor) -> None:
    value = {"env": {"TOKEN": SECRET, SECRET: 1}, "list": [OTHER.upper(), 3, None], "n": 1.5}
    assert r.value(value) == {"env": {"TOKEN": MASK, MASK: 1}, "list": [MASK, 3, None], "n": 1.5}


def test_short_secrets_and_innocent_text() -> None:
    r = Redactor.of(["abc"])
    assert r.line("ABC abc xyz") == f"{MASK} {MASK} xyz"  # exact (any case) only
    assert Redactor.of([]).line("an ordinary line, 42 rows") == "an ordinary line, 42 rows"
    assert redact(f"x {SECRET} y", [SECRET]) == f"x {MASK} y"
    assert Redactor.of([SECRET]) is Redactor.of([SECRET, ""])  # cached per set of values


def test_cost_per_log_line() -> None:
    """Report (and bound) the cost of one log line with 10 registered secrets."""
    values = [secrets.token_urlsafe(24) for _ in range(10)]
    r = Redactor.of(values)
    stream = r.lines()
    line = "2024-01-01 12:00:00 INFO processing batch 1234 of 5678: rows=1000 elapsed=0.123s"
    n = 20_000
    started = time.perf_counter()
    for _ in range(n):
        stream(line)
    with_secrets = (time.perf_counter() - started) / n * 1e6
    bare = Redactor.of([]).lines()
    started = time.perf_counter()
    for _ in range(n):
        bare(line)
    without = (time.perf_counter() - started) / n * 1e6
    print(f"redactor: {with_secrets:.1f} us/line with 10 secrets, {without:.1f} without")
    # ~5 and ~1 us on an idle machine; the bounds only catch a blow-up, as the
    # suite shares two cores with everything else
    assert with_secrets < 300 and without < 60

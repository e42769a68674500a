"""The one redactor: secret values, and text shaped like well-known tokens,
hidden from everything ferryman stores, shows or sends.

Every place that shows or sends text a step (or a receiver) produced uses
it: log lines (``infra.base.OutputCapture``), step errors and outputs,
previews, events and callback and delivery bodies. Pure and light: the
standard library only, so a step's process and the client could import it.

What a ``Redactor`` masks (with ``MASK``):

- each secret value as it is and in any letter case;
- for secrets of ``MIN_DERIVED`` characters or more, their encodings:
  hexadecimal (any case), percent-encoding, and base64, standard and
  URL-safe, padded or not, at each of the three byte alignments at which a
  secret can sit inside a longer base64 text (the part of the encoding the
  secret alone determines; encoded pieces shorter than ``MIN_ENCODED`` are
  not matched: too many innocent hits);
- well-known token shapes, secrets declared or not (``TOKEN_SHAPES``): Slack
  (``xoxb-``…, ``xapp-``…), GitHub (``ghp_``…, ``github_pat_``…), AWS access
  key ids (``AKIA``…), Stripe live keys, Google API keys (``AIza``…), PEM
  private-key blocks, Standard Webhooks secrets (``whsec_``…), ferryman API
  tokens (``fm_``…), JWTs, and the credentials after ``Bearer`` or ``Basic``
  (an ``Authorization`` header, any letter case: the scheme stays readable);
- in line mode (``line``, ``LineMasker``), a secret split over a line
  boundary: a line that ends with a prefix of a secret, starts with a suffix
  of one, or is wholly a piece of one, of at least ``MIN_FRAGMENT``
  characters (so at most ``MIN_FRAGMENT - 1`` characters of a secret can
  survive at a line break); a ``LineMasker`` also masks the lines between
  the first and last line of a PEM private-key block.

It cannot recognise a secret transformed in other ways (encrypted, reversed,
split into short pieces): code that means to leak a secret can. The
redactor stops accidents; who may register code is the real boundary (see
docs/server.md, "Security").
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote

MASK = "********"
#: The shortest piece of a secret recognised at a line boundary.
MIN_FRAGMENT = 8
#: Secrets shorter than this are masked as they are (any case), not encoded.
MIN_DERIVED = 6
#: Encoded forms shorter than this are not matched.
MIN_ENCODED = 8

#: Token shapes masked wherever they appear, by name.
TOKEN_SHAPES: dict[str, str] = {
    "slack": r"\bxox[abposr]-[A-Za-z0-9-]{10,}",
    "github": r"\bgh[pousr]_[A-Za-z0-9]{30,}|\bgithub_pat_[A-Za-z0-9_]{22,}",
    "aws": r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
    "webhook": r"\bwhsec_[A-Za-z0-9+/=]{16,}",
    "ferryman": r"\bfm_[0-9a-f]{1,32}_[A-Za-z0-9_-]{16,}",
    "jwt": r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
    "slack app": r"\bxapp-\d-[A-Za-z0-9-]{10,}",
    "stripe": r"\b(?:sk|rk)_live_[A-Za-z0-9]{16,}",
    "google": r"\bAIza[0-9A-Za-z_-]{35}",
    # The credentials of an Authorization header (the scheme stays readable).
    # (a bearer token holds a digit or punctuation: "the bearer document" stays)
    "bearer": r"(?<=(?i:bearer) )(?=[A-Za-z]*[0-9._~+/=-])[A-Za-z0-9._~+/-]{8,}=*",
    "basic": r"(?<=(?i:authorization): (?i:basic) )[A-Za-z0-9+/]{4,}={0,2}",
}
_PEM_BEGIN = r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----"
_PEM_END = r"-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----"
# In a whole text a block runs to its END line (or to the end of the text).
_SHAPES_TEXT = re.compile(
    "|".join([*TOKEN_SHAPES.values(), rf"{_PEM_BEGIN}(?:[\s\S]*?{_PEM_END}|[\s\S]*)"])
)
# In one line a block runs to the end of the line; LineMasker masks what follows.
_SHAPES_LINE = re.compile("|".join([*TOKEN_SHAPES.values(), rf"{_PEM_BEGIN}.*"]))
_PEM_BEGIN_RE = re.compile(_PEM_BEGIN)
_PEM_END_RE = re.compile(_PEM_END)
# What every token shape starts with: one cheap search decides whether the
# shapes need looking for at all (most lines have none).
# (Each alternative starts with a literal character: a character class or a
# case-insensitive group at the start made the search of every line 3x slower.
# "earer " and "asic " stand for Bearer and Basic in their usual spellings.)
_SHAPE_START = re.compile(
    r"xox|xapp-|gh[pousr]_|github_pat_|AKIA|ASIA|whsec_|fm_|eyJ|-----BEGIN|_live_|AIza"
    r"|earer |EARER |asic |ASIC "
)
# URL-safe base64 read as standard base64: one alphabet to look for.
_URLSAFE_AS_STD = str.maketrans("-_", "+/")
_STD_AS_URLSAFE = str.maketrans("+/", "-_")


def b64_cores(raw: bytes) -> tuple[set[str], set[str]]:
    """``(cores, whole)`` in the standard alphabet: the base64 text that
    ``raw`` alone determines at each of the three alignments (any base64
    text holding ``raw`` holds one of them), and its whole encoding, padded
    and not. Pieces shorter than ``MIN_ENCODED`` are left out."""
    cores, whole = set(), set()
    for shift in (0, 1, 2):
        encoded = base64.b64encode(b"\0" * shift + raw).decode("ascii")
        # Characters mixing bits of the unknown neighbours are dropped at both ends.
        start = (0, 2, 3)[shift]
        end = len(encoded.rstrip("="))
        if (shift + len(raw)) % 3:
            end -= 1
        cores.add(encoded[start:end])
        if shift == 0:
            whole |= {encoded, encoded.rstrip("=")}
    return {c for c in cores if len(c) >= MIN_ENCODED}, {w for w in whole if len(w) >= MIN_ENCODED}


def secret_forms(secret: str) -> tuple[set[str], set[str], set[str]]:
    """``(any_case, b64_cores, b64_whole)``: the texts that reveal ``secret``.

    ``any_case``: the value, its hexadecimal and percent-encoded forms (in
    any letter case); the base64 ones in the standard alphabet (the URL-safe
    alphabet is matched by translating the text)."""
    any_case = {secret}
    cores: set[str] = set()
    whole: set[str] = set()
    if len(secret) >= MIN_DERIVED:
        raw = secret.encode("utf-8")
        any_case.add(binascii.hexlify(raw).decode("ascii"))
        quoted = quote(secret, safe="")
        if quoted != secret:
            any_case.add(quoted)
        cores, whole = b64_cores(raw)
    return any_case, cores, whole


class LineMasker:
    """Masks the lines of one stream in order: ``line`` for each, plus the
    lines inside a PEM private-key block. One per stream; not thread-safe."""

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        self._in_key = False

    def __call__(self, line: str) -> str:
        if self._in_key:
            end = _PEM_END_RE.search(line)
            if end is None:
                return MASK
            self._in_key = False
            line = MASK + line[end.end() :]
        elif "-----BEGIN" in line:
            begin = _PEM_BEGIN_RE.search(line)
            if begin is not None and _PEM_END_RE.search(line, begin.end()) is None:
                self._in_key = True
        return self._redactor.line(line)


class Redactor:
    """Masks a fixed set of secret values, and well-known token shapes.

    Build one with ``Redactor.of(secrets)`` (cached); call it (or ``text``)
    on any text, ``line`` on one line of output, ``value`` on JSON values
    (strings anywhere inside, keys included), ``lines()`` for a stream.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets: tuple[str, ...] = tuple(sorted({s for s in secrets if s}, key=len))
        any_case: set[str] = set()
        cores: set[str] = set()
        whole: set[str] = set()
        for s in self.secrets:
            a, c, w = secret_forms(s)
            any_case |= a
            cores |= c
            whole |= w
        # The quick test (``_hit``) looks for these in the lower-cased text and
        # in the text read as standard base64; only a hit pays for the regex.
        self._lower = tuple({f.lower() for f in any_case})
        self._cores = tuple(cores)
        b64 = {f for f in cores | whole if f.lower() not in self._lower}
        b64 |= {f.translate(_STD_AS_URLSAFE) for f in b64}
        alternatives = sorted(
            [(f, f"(?i:{re.escape(f)})") for f in any_case] + [(f, re.escape(f)) for f in b64],
            key=lambda pair: -len(pair[0]),
        )
        # Longest first: a secret's longer forms win over pieces of them.
        self._secrets_re = (
            re.compile("|".join(a for _, a in alternatives)) if alternatives else None
        )
        self._fragmented = tuple(s for s in self.secrets if len(s) > MIN_FRAGMENT)
        self._ends = tuple(
            {p for s in self._fragmented for p in (s[:MIN_FRAGMENT], s[-MIN_FRAGMENT:])}
        )
        self._longest = max((len(s) for s in self._fragmented), default=0)

    @staticmethod
    @functools.lru_cache(maxsize=256)
    def _cached(secrets: frozenset[str]) -> Redactor:
        return Redactor(secrets)

    @classmethod
    def of(cls, secrets: Iterable[str] = ()) -> Redactor:
        """The redactor of ``secrets`` (built once per set of values)."""
        return cls._cached(frozenset(s for s in secrets if s))

    def __call__(self, text: str) -> str:
        return self.text(text)

    def __bool__(self) -> bool:
        return True  # even without secrets it masks token shapes

    def _hit(self, text: str) -> bool:
        """Whether ``text`` may hold a form of a secret (never wrong about "no")."""
        low = text.lower()
        for form in self._lower:
            if form in low:
                return True
        if self._cores:
            std = text.translate(_URLSAFE_AS_STD)
            for form in self._cores:
                if form in std:
                    return True
        return False

    def _mask_secrets(self, text: str) -> str:
        if self._secrets_re is not None and self._hit(text):
            text = self._secrets_re.sub(MASK, text)
        return text

    def text(self, text: str) -> str:
        """``text`` (any number of lines) with secrets and token shapes masked."""
        text = self._mask_secrets(text)
        if _SHAPE_START.search(text):
            text = _SHAPES_TEXT.sub(MASK, text)
        return text

    def line(self, line: str) -> str:
        """One line of output: as ``text``, plus the pieces of a secret at its
        start or end (a secret split over a line break)."""
        line = self._mask_secrets(line)
        if _SHAPE_START.search(line):
            line = _SHAPES_LINE.sub(MASK, line)
        if self._ends and len(line) >= MIN_FRAGMENT:
            body = line.strip()
            if len(body) <= self._longest or any(end in line for end in self._ends):
                for s in self._fragmented:
                    line = _mask_fragments(line, s)
        return line

    def value(self, value: Any) -> Any:
        """A JSON value with every string in it (mapping keys too) masked."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {
                (self.text(k) if isinstance(k, str) else k): self.value(v) for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return value

    def lines(self) -> LineMasker:
        """A masker for the lines of one stream (PEM blocks span lines)."""
        return LineMasker(self)


def _mask_fragments(line: str, secret: str) -> str:
    """Mask a prefix of ``secret`` ending ``line``, a suffix of it starting
    ``line``, or ``line`` itself when it is a piece of it (each at least
    ``MIN_FRAGMENT`` characters)."""
    n = len(line)
    if n < MIN_FRAGMENT:
        return line
    body = line.strip()
    if len(body) >= MIN_FRAGMENT and body in secret:
        return line.replace(body, MASK)
    # The end: a prefix of the secret (shorter than it: whole ones are masked already).
    head = secret[:MIN_FRAGMENT]
    i = line.find(head, max(0, n - len(secret) + 1))
    while i != -1:
        if secret.startswith(line[i:]):
            line = line[:i] + MASK
            break
        i = line.find(head, i + 1)
    # The start: a suffix of the secret.
    tail = secret[-MIN_FRAGMENT:]
    lead = len(line) - len(line.lstrip())
    limit = min(len(line), lead + len(secret) - 1)
    j = line.find(tail, lead, limit)
    while j != -1:
        end = j + MIN_FRAGMENT
        if secret.endswith(line[lead:end]):
            return line[:lead] + MASK + line[end:]
        j = line.find(tail, j + 1, limit)
    return line


#: Masks token shapes only: for text from which no declared secret is known.
SHAPES_ONLY = Redactor()


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with ``secrets`` and token shapes masked (a one-off; build a
    ``Redactor`` to mask many texts)."""
    return Redactor.of(secrets).text(text)


Masker = Callable[[str], str]
"""Anything that masks a text (a ``Redactor`` is one)."""

"""Names and labels of Kubernetes objects, made valid from any text.

- ``job_name_prefix``: the Job's ``generateName`` — a DNS-1123 label slug of
  at most 45 characters ending in ``-``; the API server appends 5 random
  characters, so two attempts never collide and the name (and the pods'
  ``job-name`` label) stays well under 63 characters.
- ``label_key`` / ``label_value``: any text made into a valid label key
  (optional DNS-subdomain prefix ≤ 253 + ``/`` + name ≤ 63) or value (≤ 63,
  possibly empty).

Pure rules, table-tested in ``tests/unit/test_kubernetes_rules.py``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from slugify import slugify

#: Prefix of ferryman's own labels (``ferryman.io/run-id`` …).
LABEL_PREFIX = "ferryman.io/"
#: Longest ``generateName`` we send (the API server adds 5 characters).
MAX_PREFIX = 45

_LABEL_NAME = re.compile(r"^[a-zA-Z0-9]([-a-zA-Z0-9_.]*[a-zA-Z0-9])?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_NOT_LABEL_CHAR = r"[^-a-zA-Z0-9_.]+"
_TRIM = re.compile(r"^[^a-zA-Z0-9]+|[^a-zA-Z0-9]+$")


def _trim(text: str, limit: int) -> str:
    """Cut to ``limit`` characters and strip non-alphanumerics from both ends."""
    return _TRIM.sub("", _TRIM.sub("", text)[:limit])


def _label_chars(text: str) -> str:
    """Transliterate to ASCII and turn every run of non-label characters into ``-``."""
    ascii_text = slugify(text, lowercase=False, regex_pattern=_NOT_LABEL_CHAR)
    return re.sub(_NOT_LABEL_CHAR, "-", ascii_text)


def _dns(text: str) -> str:
    """Lower-case ASCII letters, digits and single dashes."""
    return re.sub(r"[^a-z0-9]+", "-", _label_chars(text).lower())


def is_dns_label(text: str) -> bool:
    """Whether ``text`` is a valid DNS-1123 label (namespaces, Job names)."""
    return len(text) <= 63 and bool(_DNS_LABEL.match(text))


def job_name_prefix(pipeline: str, step: str) -> str:
    """``generateName`` for a step's Job: ``<pipeline>-<step>-`` as a DNS-1123
    slug of at most 45 characters (``ferryman-`` when nothing usable is left)."""
    slug = _dns(f"{pipeline}-{step}")
    slug = _trim(slug, MAX_PREFIX - 1)
    return (slug or "ferryman") + "-"


def label_value(value: object) -> str:
    """Any value as a label value: ≤ 63 of ``[-A-Za-z0-9_.]``, alphanumeric at
    both ends, or empty. Unicode is transliterated (``é`` → ``e``)."""
    return _trim(_label_chars(str(value)), 63)


def label_key(key: str) -> str:
    """Any text as a label key: ``[prefix/]name``.

    The prefix (before the first ``/``) becomes a lower-case DNS subdomain of
    at most 253 characters; the name follows the value rules but may not be
    empty (``ValueError`` then).
    """
    prefix, sep, name = key.partition("/")
    if not sep:
        prefix, name = "", key
    clean_name = _trim(_label_chars(name), 63)
    if not clean_name:
        raise ValueError(f"label key {key!r} has no letters or digits in its name")
    if not prefix:
        return clean_name
    parts = [_trim(_dns(p), 63) for p in prefix.split(".")]
    clean_prefix = ".".join(p for p in parts if p)[:253].strip(".-")
    return f"{clean_prefix}/{clean_name}" if clean_prefix else clean_name


def is_label_key(key: str) -> bool:
    """Whether ``key`` is a valid label key (used by the tests' tables)."""
    prefix, sep, name = key.rpartition("/")
    if sep and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return False
    return len(name) <= 63 and bool(_LABEL_NAME.match(name))


def is_label_value(value: str) -> bool:
    """Whether ``value`` is a valid label value."""
    return value == "" or (len(value) <= 63 and bool(_LABEL_NAME.match(value)))


def make_labels(*layers: Mapping[str, object]) -> dict[str, str]:
    """Merge label layers (later wins) with keys and values made valid."""
    out: dict[str, str] = {}
    for layer in layers:
        for k, v in layer.items():
            out[label_key(str(k))] = label_value(v)
    return out

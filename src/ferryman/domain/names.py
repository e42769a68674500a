"""The rule for the names of pipelines, steps and namespaces."""

from __future__ import annotations

import re

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def check_name(kind: str, value: str) -> str:
    """``value`` if it is a valid name of a ``kind`` (pipeline, step, …); else ``ValueError``."""
    if not NAME_RE.match(value):
        raise ValueError(
            f"invalid {kind} name {value!r}: use letters, digits, '_', '-' or '.', "
            "starting with a letter or digit (at most 128 characters)"
        )
    return value

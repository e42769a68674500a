"""The rule for the names of secrets a step declares (``@step(secrets=[...])``).

A secret reaches a step as an environment variable of the same name, so a
name is a variable name: a letter or ``_``, then letters, digits or ``_``
(at most 128 characters). Names starting with ``FERRYMAN_`` are ferryman's
own (its settings and secrets): no step may ask for one, and no resolver
hands one out.
"""

from __future__ import annotations

import re

#: ferryman's own variables: never a step's secret.
RESERVED_SECRET_PREFIX = "FERRYMAN_"
SECRET_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


def secret_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a secret, or None when it can."""
    if not isinstance(name, str) or not SECRET_NAME_RE.match(name):
        return (
            f"invalid secret name {name!r}: use letters, digits and '_', starting with a "
            "letter or '_' (at most 128 characters; it becomes an environment variable)"
        )
    if name.upper().startswith(RESERVED_SECRET_PREFIX):
        return (
            f"secret name {name!r} is reserved: {RESERVED_SECRET_PREFIX}* names are "
            "ferryman's own and never reach a step"
        )
    return None


def check_secret_name(name: str) -> str:
    """``name`` if it may name a secret; else ``ValueError`` saying why."""
    problem = secret_name_problem(name)
    if problem is not None:
        raise ValueError(problem)
    return name

"""The options a step takes, checked when the step is declared (``@step``,
``container(...)``, ``task(...)``, ``with_options``), and exception types
named for ``retry_on``/``no_retry_on``."""

from __future__ import annotations

import os
import sys
from typing import Any

from ferryman.domain.secret_names import secret_name_problem
from ferryman.dsl.errors import DSLError

#: The prefix of the module names pipeline files loaded by path get.
USER_MODULE_PREFIX = "ferryman_user_"


def exception_names(value: Any, where: str) -> Any:
    """``retry_on``/``no_retry_on`` given as exception classes and/or dotted
    names, as names: ``module.qualname`` (the runtime reports an exception's
    classes so), built-ins bare (``TimeoutError``), and a class of a file
    imported by path (the pipeline file, ``__main__``) as
    ``<file stem>.qualname``, which does not depend on the module name the
    file gets in each process."""
    items = value if isinstance(value, (list, tuple)) else [value]
    out: list[Any] = []
    for item in items:
        if isinstance(item, type):
            if not issubclass(item, BaseException):
                raise DSLError(f"{where}: {item.__qualname__} is not an exception class")
            qual = item.__qualname__
            if "<locals>" in qual:
                raise DSLError(
                    f"{where}: exception class {item.__name__!r} must be defined at module "
                    "level, not inside a function"
                )
            module = item.__module__
            if module == "__main__" or module.startswith(USER_MODULE_PREFIX):
                file = getattr(sys.modules.get(module), "__file__", None)
                if file:
                    module = os.path.splitext(os.path.basename(file))[0]
            item = qual if module == "builtins" else f"{module}.{qual}"
        out.append(item)
    return out


STEP_OPTIONS = {
    "name",
    "retries",
    "retry_delay",
    "retry_backoff",
    "retry_jitter",
    "retry_max_delay",
    "timeout",
    "infrastructure",
    "infra_overrides",
    "env",
    "secrets",
    "resources",
}
# Options of one kind only, and the option the other kind has instead.
KIND_OPTIONS = {
    "python": {"retry_on": "retry_on_exit_codes", "no_retry_on": "no_retry_on_exit_codes"},
    "container": {"retry_on_exit_codes": "retry_on", "no_retry_on_exit_codes": "no_retry_on"},
}


def check_step_options(options: dict[str, Any], where: str, kind: str = "python") -> None:
    """Refuse unknown options, another kind's options, and bad secret names
    (``where`` prefixes the message)."""
    known = STEP_OPTIONS | set(KIND_OPTIONS[kind])
    for other_kind, other in KIND_OPTIONS.items():
        wrong = sorted(set(options) & set(other)) if other_kind != kind else []
        if wrong:
            instead = ", ".join(other[w] for w in wrong)
            raise DSLError(
                f"{where}{', '.join(wrong)} is an option of {other_kind} steps; a {kind} "
                f"step has {instead}"
            )
    unknown = set(options) - known
    if unknown:
        raise DSLError(f"{where}unknown step option(s) {sorted(unknown)}; known: {sorted(known)}")
    secrets = options.get("secrets")
    if secrets is not None:
        # FERRYMAN_* and names that are no variable names: refused when declared.
        if isinstance(secrets, str) or not isinstance(secrets, list | tuple):
            raise DSLError(f"{where}secrets must be a list of names, e.g. secrets=['API_KEY']")
        problems = [p for p in map(secret_name_problem, secrets) if p is not None]
        if problems:
            raise DSLError(f"{where}" + "; ".join(problems))

"""ferryman's own secrets kept from what its processes run: ``ferryman
server`` and ``ferryman worker`` forget them from their environment once the
settings are read, and become non-dumpable (docs/server.md, "Security")."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import MutableMapping

#: Variables holding ferryman's secrets (or credentials: the database URL,
#: registry passwords in the infrastructure settings).
SECRET_VARIABLES = (
    "FERRYMAN_JWT_SECRET",
    "FERRYMAN_ADMIN_PASSWORD",
    "FERRYMAN_WEBHOOK_SECRET",
    "FERRYMAN_SLACK_BOT_TOKEN",
    "FERRYMAN_SLACK_SIGNING_SECRET",
    "FERRYMAN_SECRET_KEY",
    "FERRYMAN_DATABASE_URL",
    "FERRYMAN_INFRA_CONFIG",
)


def protect_process_secrets() -> list[str]:
    """What ``ferryman server`` and ``ferryman worker`` do once their settings
    are read: forget the secret variables (``forget_secret_environ``) and, on
    Linux, make the process non-dumpable, so that other processes of the same
    user — the steps it starts among them — can neither read its initial
    environment (``/proc/<pid>/environ``) nor its memory, nor attach a
    debugger (the kernel then allows it to root only). Returns the names
    forgotten."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_dumpable = 4
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_dumpable, 0, 0, 0, 0)
    return forget_secret_environ()


def forget_secret_environ(environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Remove ``SECRET_VARIABLES`` from the process environment, once the
    settings have been read (``ferryman server`` and ``ferryman worker`` do):
    code this process runs itself (``inline`` steps, libraries that report
    their environment) no longer finds them in ``os.environ``. Returns the
    names removed. Hygiene, not isolation: see docs/server.md, "Security"."""
    environ = os.environ if environ is None else environ
    gone = [name for name in SECRET_VARIABLES if name in environ]
    for name in gone:
        del environ[name]
    return gone

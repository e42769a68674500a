"""The ``file`` resolver: one file per secret in a directory.

The layout of a Kubernetes Secret mounted as a volume, of Docker/Compose
secrets (``/run/secrets``) and of most secret agents: the file named
``CAST_API_KEY`` holds the value. One final line break is dropped (files
written with ``echo``); anything else is the value as it is, in UTF-8.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from pathlib import Path

from ferryman.secret_resolvers.base import SecretResolver, SecretSourceFailed

#: The largest secret file read.
MAX_FILE_BYTES = 65536


class FileResolver(SecretResolver):
    """Values of the files named like the secrets in ``directory``."""

    kind = "file"

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def describe(self) -> str:
        return f"file ({self.directory})"

    def lookup(self, names: Sequence[str]) -> dict[str, str]:
        if not self.directory.is_dir():
            raise SecretSourceFailed(f"secret directory {self.directory} does not exist")
        out: dict[str, str] = {}
        for name in names:
            # Names are variable names (checked by ``resolve``): no path can escape.
            path = self.directory / name
            try:
                with path.open("rb") as f:
                    raw = f.read(MAX_FILE_BYTES + 1)
            except FileNotFoundError:
                continue
            except OSError as exc:
                if exc.errno in (errno.EISDIR, errno.ENOTDIR):
                    continue
                raise SecretSourceFailed(
                    f"secret file {path} cannot be read: {exc.strerror or type(exc).__name__}"
                ) from None
            if len(raw) > MAX_FILE_BYTES:
                raise SecretSourceFailed(
                    f"secret file {path} is larger than {MAX_FILE_BYTES} bytes"
                )
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise SecretSourceFailed(f"secret file {path} is not UTF-8 text") from None
            out[name] = text[:-1] if text.endswith("\n") else text
            if out[name].endswith("\r"):
                out[name] = out[name][:-1]
        return out

"""What goes wrong with a pipeline definition: ``DSLError`` (it cannot be
compiled) and ``PipelineCodeError`` (the user's own code raised while the file
was imported or the pipeline body ran), with the file and line to look at.

Both are the user's mistakes, not ferryman's: the CLI reports them on one
line (plus the offending source line) with exit code 2.
"""

from __future__ import annotations

import os
import sysconfig
import traceback
from pathlib import Path

_FERRYMAN_DIR = str(Path(__file__).resolve().parents[1]) + os.sep


class DSLError(ValueError):
    """A pipeline or step definition that cannot be compiled."""


class PipelineCodeError(DSLError):
    """An exception raised by the user's code while a pipeline file was
    imported or a pipeline body compiled (a ``SyntaxError``, a ``NameError``,
    a failed import …). ``file``, ``line`` and ``source`` say where, when known."""

    def __init__(
        self, message: str, file: str | None = None, line: int | None = None, source: str = ""
    ) -> None:
        self.file = file
        self.line = line
        self.source = source
        self.reason = message
        where = f"{shown(file)}:{line}: " if file and line else (f"{shown(file)}: " if file else "")
        text = f"{where}{message}"
        if source:
            text += f"\n    {source}"
        super().__init__(text)


def code_error(
    exc: BaseException, file: str | Path | None = None, line: int | None = None
) -> PipelineCodeError:
    """``exc``, raised by user code, as a ``PipelineCodeError`` pointing at the
    line to fix: the error's own position for a ``SyntaxError``, else the
    deepest frame of the traceback that is the user's code (not ferryman, the
    standard library or an installed package), else ``file`` (at ``line``)."""
    if isinstance(exc, SyntaxError):
        text = (exc.text or "").strip()
        return PipelineCodeError(
            f"{type(exc).__name__}: {exc.msg}", exc.filename or _str(file), exc.lineno, text
        )
    message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if isinstance(exc, DSLError) and not isinstance(exc, PipelineCodeError):
        message = str(exc)  # ferryman's own words about a misuse of the DSL
    frames = traceback.extract_tb(exc.__traceback__)
    target = str(Path(file).resolve()) if file is not None else None
    chosen = next((f for f in reversed(frames) if _is_user_code(f.filename)), None)
    if chosen is None and target is not None:
        chosen = next((f for f in reversed(frames) if _same(f.filename, target)), None)
    if chosen is None:
        if file is None or line is None:
            return PipelineCodeError(message, _str(file))
        line, source = _def_line(str(file), line)
        return PipelineCodeError(message, str(file), line, source)
    return PipelineCodeError(message, chosen.filename, chosen.lineno, (chosen.line or "").strip())


def raised_by_ferryman(exc: BaseException) -> bool:
    """Whether ``exc`` started inside ferryman's own code and is not one of
    its ways of refusing input (``DSLError``, ``ValueError``): a bug of
    ferryman's, to be reported as an internal error even when the user's
    code called it."""
    if isinstance(exc, (DSLError, ValueError, SyntaxError)):
        return False
    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and os.path.abspath(frames[-1].filename).startswith(_FERRYMAN_DIR)


def _def_line(file: str, line: int) -> tuple[int, str]:
    """The ``def`` line of a function whose code starts at ``line`` (its first
    decorator), and its text."""
    import linecache

    for n in range(line, line + 50):
        text = linecache.getline(file, n).strip()
        if not text:
            break
        if text.startswith(("def ", "async def ")):
            return n, text
    return line, linecache.getline(file, line).strip()


def _str(file: str | Path | None) -> str | None:
    return None if file is None else str(file)


def _same(a: str, b: str) -> bool:
    try:
        return str(Path(a).resolve()) == b
    except OSError:
        return False


def _is_user_code(filename: str) -> bool:
    if not filename or filename.startswith("<"):  # <frozen importlib._bootstrap>, <string>
        return False
    path = os.path.abspath(filename)
    if path.startswith(_FERRYMAN_DIR):
        return False
    parts = set(path.split(os.sep))
    if parts & {"site-packages", "dist-packages"}:
        return False
    stdlib = sysconfig.get_paths().get("stdlib", "")
    return not (stdlib and path.startswith(stdlib + os.sep))


def shown(file: str | None) -> str:
    """``file`` relative to the current directory when it is below it."""
    if not file:
        return ""
    try:
        rel = os.path.relpath(file)
    except ValueError:  # another drive (Windows)
        return file
    return file if rel.startswith("..") else rel

"""Import and call a step function; encode its outcome (standard library only).

Shared by the ``python -m ferryman.runtime`` entry point (one step per process)
and by the inline infrastructure (many steps in the worker's threads), so
that both report results and errors identically.

The outcome of a step is a JSON object, printed after ``RESULT_MARKER + nonce
+ " "`` as the last line of stdout:

- ``{"ok": true, "value": ...}`` (exit code 0);
- ``{"ok": false, "error": "...", "kind": "exception" | "output"}`` (exit
  code 1): the function raised, or its return value is not JSON-serialisable;
- ``{"ok": false, "error": "cannot import ...", "kind": "import"}`` (exit
  code 2): the function could not be imported;
- ``{"ok": false, "error": "output is ...", "kind": "output", "size": N}``
  (exit code 1): the value's JSON is ``N`` bytes, over the limit the payload
  gives (``max_output_bytes``). It is measured while it is encoded, and no
  more than the limit of it is ever held: a step returning 100 MB costs the
  worker nothing, and the step's process no second copy.

When the failure is an exception (of the function, or of its module's code
while it was imported), the outcome also has ``"type"``, the exception's
qualified name, and ``"mro"``, the names of its classes from itself up
(``object`` left out), so that the worker can tell whether the step's
``retry_on``/``no_retry_on`` allow a retry. Names are ``module.qualname``;
built-ins by their bare name (``ValueError``), as ``retry_on`` names them.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
import threading
import types
import zlib

# Only for type checkers: importing typing/collections.abc costs milliseconds
# at every step start.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any

# Duplicated from ferryman.infra.base on purpose: importing it would pull in
# pydantic and slow down every step's start-up. tests/unit/test_runtime.py
# asserts that the values stay equal.
RESULT_MARKER = "\x1eferryman-result "
PAYLOAD_ENV = "FERRYMAN_STEP_PAYLOAD"
#: The setting that limits a step's output (``settings.worker.max_output_bytes``);
#: named in the error, duplicated for the same reason.
MAX_OUTPUT_SETTING = "FERRYMAN_MAX_OUTPUT_BYTES"
#: What ``{"ok": true, "value": V}`` adds to the JSON of ``V``.
OK_ENVELOPE = len('{"ok": true, "value": }')

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_IMPORT = 2


class LoadError(Exception):
    """The step function cannot be imported (the message says why)."""


#: Module names of files whose stem names another module already.
_FILE_MODULE_PREFIX = "_ferryman_file_"

_lock = threading.RLock()
# absolute file path -> (mtime_ns, module)
_file_modules: dict[str, tuple[int, types.ModuleType]] = {}


def display(function: Mapping[str, Any]) -> str:
    """``module:qualname`` or ``file:qualname`` (for messages)."""
    return f"{function.get('module') or function.get('file')}:{function.get('qualname')}"


def add_sys_path(entries: Sequence[str]) -> None:
    """Put ``entries`` (in order) at the front of ``sys.path`` unless already there."""
    with _lock:
        for entry in reversed([e for e in entries if isinstance(e, str) and e]):
            if entry not in sys.path:
                sys.path.insert(0, entry)


def _module_name_for(path: str) -> str:
    """A module name for ``path``: its stem, unless that name is taken by another module."""
    stem = os.path.splitext(os.path.basename(path))[0]
    if stem.isidentifier():
        existing = sys.modules.get(stem)
        if existing is None:
            return stem
        existing_file = getattr(existing, "__file__", None)
        if existing_file and os.path.realpath(existing_file) == path:
            return stem
    digest = f"{zlib.crc32(path.encode()):08x}"
    safe = "".join(c if c.isalnum() or c == "_" else "_" for c in stem)
    return f"{_FILE_MODULE_PREFIX}{digest}_{safe}"


def load_file(file: str) -> types.ModuleType:
    """Import a python file as a module (cached by path, re-imported if it changed).

    The file's directory is put at the front of ``sys.path`` (as ``python
    file.py`` would) and the module is registered in ``sys.modules`` under a
    name derived from the file, so that pickling and dataclasses work.
    """
    path = os.path.realpath(os.path.abspath(file))
    try:
        mtime = os.stat(path).st_mtime_ns
    except OSError as exc:
        raise LoadError(f"file not found: {file}") from exc
    with _lock:
        cached = _file_modules.get(path)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        directory = os.path.dirname(path)
        if directory not in sys.path:
            sys.path.insert(0, directory)
        name = cached[1].__name__ if cached is not None else _module_name_for(path)
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise LoadError(f"not a python file: {file}")
        module = importlib.util.module_from_spec(spec)
        previous = sys.modules.get(name)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            if previous is not None:
                sys.modules[name] = previous
            else:
                sys.modules.pop(name, None)
            raise
        _file_modules[path] = (mtime, module)
        return module


def load_function(function: Mapping[str, Any], sys_path: Sequence[str] = ()) -> Callable[..., Any]:
    """Import the function described by ``{module|file, qualname}``.

    Raises ``LoadError`` for a missing file, module or attribute; exceptions
    raised by the module's own code propagate unchanged. If the object has a
    ``__ferryman_fn__`` attribute (the DSL's step wrapper), that plain function
    is returned instead.
    """
    qualname = function.get("qualname")
    module_name = function.get("module")
    file = function.get("file")
    if not isinstance(qualname, str) or not qualname:
        raise LoadError("the function reference has no qualname")
    if "<locals>" in qualname.split("."):
        raise LoadError("functions defined inside other functions cannot be imported")
    add_sys_path(sys_path)
    obj: Any
    if file:
        obj = load_file(str(file))
    elif module_name:
        try:
            obj = importlib.import_module(str(module_name))
        except ModuleNotFoundError as exc:
            wanted = str(module_name)
            if exc.name and (wanted == exc.name or wanted.startswith(exc.name + ".")):
                raise LoadError(f"no module named {exc.name!r}") from exc
            raise
    else:
        raise LoadError("the function reference needs a module or a file")
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise LoadError(f"{getattr(obj, '__name__', obj)!s} has no attribute {part!r}") from exc
    obj = getattr(obj, "__ferryman_fn__", obj)
    if not callable(obj):
        raise LoadError(f"{qualname} is not callable")
    return obj  # type: ignore[no-any-return]


def call_function(fn: Callable[..., Any], inputs: Mapping[str, Any]) -> Any:
    """Call ``fn(**inputs)``; a coroutine result is run to completion with ``asyncio.run``."""
    value = fn(**inputs)
    if isinstance(value, types.CoroutineType):
        import asyncio

        value = asyncio.run(value)
    return value


def format_user_traceback(exc: BaseException) -> str:
    """The traceback of ``exc`` without this module's own frames."""
    import traceback

    tb = exc.__traceback__
    here = os.path.realpath(__file__)
    while tb is not None and os.path.realpath(tb.tb_frame.f_code.co_filename) == here:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def type_name(cls: type) -> str:
    """``module.qualname`` of a class; a built-in one by its bare name; one of
    a file imported by path (``load_file``) as ``<file stem>.qualname``, the
    name the DSL gives it, whatever module name the file got here."""
    module = getattr(cls, "__module__", None) or "builtins"
    qualname = getattr(cls, "__qualname__", None) or cls.__name__
    if module == "builtins":
        return qualname
    if module.startswith(_FILE_MODULE_PREFIX):
        file = getattr(sys.modules.get(module), "__file__", None)
        if file:
            module = os.path.splitext(os.path.basename(file))[0]
    return f"{module}.{qualname}"


def exception_types(exc: BaseException) -> dict[str, Any]:
    """The ``type`` and ``mro`` fields of an outcome (module docstring)."""
    mro = [type_name(c) for c in type(exc).__mro__ if c is not object]
    return {"type": mro[0], "mro": mro}


def _failure(error: str, kind: str, exc: BaseException | None = None) -> str:
    out: dict[str, Any] = {"ok": False, "error": error, "kind": kind}
    if exc is not None:
        out.update(exception_types(exc))
    return json.dumps(out)


def human_bytes(n: int) -> str:
    """``100.0 MiB``, ``1 MiB``, ``512.0 KiB``, ``20 bytes``: whole units bare."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n // size} {unit}" if n % size == 0 else f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def output_too_large(size: int, limit: int) -> str:
    """The error of a step whose output's JSON is ``size`` bytes, over ``limit``."""
    return (
        f"output is {human_bytes(size)}, over the {human_bytes(limit)} limit "
        f"({MAX_OUTPUT_SETTING}): write large data to storage and return a reference"
    )


class OutputTooLarge(Exception):
    """A step's output is over the limit (``size``: its JSON's length)."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(output_too_large(size, limit))
        self.size = size


def encode_success(value: Any, max_bytes: int | None = None) -> str:
    """``{"ok": true, "value": value}`` as JSON; ``OutputTooLarge`` when the
    value's JSON is longer than ``max_bytes``. The value is encoded piece by
    piece and counted: past the limit the pieces are dropped, not kept."""
    if max_bytes is None:
        return json.dumps({"ok": True, "value": value})
    kept: list[str] = []
    size = 0
    for chunk in json.JSONEncoder().iterencode(value):
        size += len(chunk)  # ASCII (ensure_ascii): characters are bytes
        if size <= max_bytes:
            kept.append(chunk)
        elif kept:
            kept = []  # over the limit: count the rest, keep nothing
    if size > max_bytes:
        raise OutputTooLarge(size, max_bytes)
    return '{"ok": true, "value": ' + "".join(kept) + "}"


def run_step(
    function: Mapping[str, Any],
    inputs: Mapping[str, Any],
    sys_path: Sequence[str],
    write_stderr: Callable[[str], object],
    max_output_bytes: int | None = None,
) -> tuple[str, int]:
    """Import and call the step function; return ``(outcome_json, exit_code)``.

    Tracebacks of the user's code (import-time or call-time) are passed to
    ``write_stderr`` as one text; the outcome JSON is what follows the result
    marker. An output whose JSON is over ``max_output_bytes`` is a failure.
    """
    qualname = str(function.get("qualname"))
    try:
        fn = load_function(function, sys_path)
    except LoadError as exc:
        return _failure(f"cannot import {display(function)}: {exc}", "import"), EXIT_IMPORT
    except (Exception, SystemExit) as exc:
        write_stderr(format_user_traceback(exc))
        error = f"cannot import {display(function)}: {_describe(exc)}"
        return _failure(error, "import", exc), EXIT_IMPORT
    try:
        value = call_function(fn, inputs)
    except (Exception, SystemExit) as exc:
        write_stderr(format_user_traceback(exc))
        return _failure(_describe(exc), "exception", exc), EXIT_FAILED
    try:
        return encode_success(value, max_output_bytes), EXIT_OK
    except OutputTooLarge as exc:
        out = {"ok": False, "error": str(exc), "kind": "output", "size": exc.size}
        return json.dumps(out), EXIT_FAILED
    except (TypeError, ValueError, RecursionError) as exc:
        error = f"return value of {qualname} is not JSON-serialisable: {exc}"
        return _failure(error, "output"), EXIT_FAILED


def result_line(nonce: str, outcome_json: str) -> str:
    """The line (without newline) that carries a step's outcome on stdout."""
    return f"{RESULT_MARKER}{nonce} {outcome_json}"

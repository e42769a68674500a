"""Find a pipeline from what a user types: ``file.py:name``, ``file.yaml`` or
``package.module:name``."""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import os
import sys
from pathlib import Path

from ferryman.domain.spec import PipelineSpec
from ferryman.dsl.decorators import USER_MODULE_PREFIX, Pipeline, pipelines_in
from ferryman.dsl.errors import DSLError, PipelineCodeError, code_error, raised_by_ferryman

#: The suffixes of pipeline files.
FILE_SUFFIXES = (".py", ".yaml", ".yml", ".json")


class PipelineNotFound(LookupError):
    """The reference names no pipeline."""


def looks_like_path(target: str) -> bool:
    """Whether ``target`` (a reference without its ``:name``) can only be a
    file: it has a directory part (names have no ``/``), or a suffix that is a
    pipeline file's or close to one (``etl.pyy``)."""
    if "/" in target or os.sep in target:
        return True
    suffix = Path(target).suffix
    return suffix in FILE_SUFFIXES or bool(
        suffix and difflib.get_close_matches(suffix, FILE_SUFFIXES, n=1, cutoff=0.7)
    )


def missing_file(target: str) -> str:
    """``no such file: X``, with the pipeline file of that directory whose name
    is closest to ``X`` when there is one."""
    p = Path(target)
    directory = p.parent if str(p.parent) else Path(".")
    try:
        names = [f.name for f in directory.iterdir() if f.suffix in FILE_SUFFIXES and f.is_file()]
    except OSError:
        names = []
    close = difflib.get_close_matches(p.name, names, n=1, cutoff=0.6)
    if close:
        return f"no such file: {target} (did you mean {directory / close[0]}?)"
    if p.suffix not in FILE_SUFFIXES:
        return f"no such file: {target} (pipeline files end in {', '.join(FILE_SUFFIXES)})"
    return f"no such file: {target}"


def load_python_file(path: Path) -> dict[str, object]:
    """Import a pipeline file under a stable synthetic module name."""
    path = path.resolve()
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:8]
    modname = f"{USER_MODULE_PREFIX}{path.stem}_{digest}"
    if modname in sys.modules:
        return vars(sys.modules[modname])
    spec = importlib.util.spec_from_file_location(modname, path)
    if spec is None or spec.loader is None:
        raise PipelineNotFound(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[modname] = module
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[modname]
        # The user's code failed (a SyntaxError, a NameError, an import of
        # theirs): their mistake, reported with its file and line.
        if raised_by_ferryman(exc):
            raise
        raise code_error(exc, path) from exc
    return vars(module)


def load_pipeline(ref: str) -> PipelineSpec:
    """Compile the pipeline that ``ref`` names.

    ``ref`` is ``path/to/file.py[:name]``, ``path/to/file.yaml``/``.yml``/``.json``
    or ``package.module:name``. A python file with exactly one pipeline needs no
    ``:name``.
    """
    target, _, attr = ref.partition(":")
    p = Path(target)
    if looks_like_path(target) and not p.is_file():
        raise PipelineNotFound(missing_file(target))
    if p.suffix in (".yaml", ".yml", ".json"):
        from ferryman.dsl.yaml_loader import load_pipeline_file

        return load_pipeline_file(p)
    namespace = load_python_file(p) if p.suffix == ".py" else _import_module(target)
    found = pipelines_in(namespace)
    if attr:
        obj = namespace.get(attr)
        if not isinstance(obj, Pipeline):
            names = ", ".join(sorted(_attr_names(namespace))) or "none"
            raise PipelineNotFound(f"{target} has no pipeline {attr!r} (pipelines: {names})")
        return obj.spec()
    if len(found) != 1:
        names = ", ".join(sorted(_attr_names(namespace))) or "none"
        raise PipelineNotFound(
            f"{target} defines {len(found)} pipelines ({names}): say which with {target}:NAME"
        )
    return found[0].spec()


def _import_module(target: str) -> dict[str, object]:
    try:
        return vars(importlib.import_module(target))
    except ImportError as exc:
        if exc.name is not None and (target == exc.name or target.startswith(exc.name + ".")):
            raise PipelineNotFound(f"cannot import module {target!r}: {exc}") from None
        raise code_error(exc) from exc  # the module exists; an import inside it failed
    except Exception as exc:
        if raised_by_ferryman(exc):
            raise
        raise code_error(exc) from exc


def _attr_names(namespace: dict[str, object]) -> list[str]:
    return [k for k, v in namespace.items() if isinstance(v, Pipeline)]


__all__ = [
    "DSLError",
    "PipelineCodeError",
    "PipelineNotFound",
    "load_pipeline",
    "load_python_file",
    "looks_like_path",
    "missing_file",
]

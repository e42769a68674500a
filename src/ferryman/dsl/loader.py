"""Find a pipeline from what a user types: ``file.py:name``, ``file.yaml`` or
``package.module:name``."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path

from ferryman.domain.spec import PipelineSpec
from ferryman.dsl.decorators import USER_MODULE_PREFIX, DSLError, Pipeline, pipelines_in


class PipelineNotFound(LookupError):
    """The reference names no pipeline."""


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
    except Exception:
        del sys.modules[modname]
        raise
    return vars(module)


def load_pipeline(ref: str) -> PipelineSpec:
    """Compile the pipeline that ``ref`` names.

    ``ref`` is ``path/to/file.py[:name]``, ``path/to/file.yaml``/``.yml``/``.json``
    or ``package.module:name``. A python file with exactly one pipeline needs no
    ``:name``.
    """
    target, _, attr = ref.partition(":")
    p = Path(target)
    if p.suffix in (".yaml", ".yml", ".json"):
        from ferryman.dsl.yaml_loader import load_pipeline_file

        if not p.exists():
            raise PipelineNotFound(f"no such file: {target}")
        return load_pipeline_file(p)
    if p.suffix == ".py":
        if not p.exists():
            raise PipelineNotFound(f"no such file: {target}")
        namespace = load_python_file(p)
    else:
        try:
            namespace = vars(importlib.import_module(target))
        except ImportError as exc:
            raise PipelineNotFound(f"cannot import module {target!r}: {exc}") from None
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


def _attr_names(namespace: dict[str, object]) -> list[str]:
    return [k for k, v in namespace.items() if isinstance(v, Pipeline)]


__all__ = ["DSLError", "PipelineNotFound", "load_pipeline", "load_python_file"]

"""Reading pipeline files: YAML (duplicate keys refused) or JSON."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from ferryman.domain.spec import PipelineSpec
from ferryman.dsl.yaml_loader.compiler import spec_from_mapping
from ferryman.dsl.yaml_loader.context import PipelineFileError

SUFFIXES = (".yaml", ".yml", ".json")


def load_pipeline_file(path: str | Path) -> PipelineSpec:
    """Read a ``.yaml``/``.yml``/``.json`` pipeline file and compile it.

    Relative function files are resolved against the file's directory. Raises
    ``PipelineFileError`` for an unreadable file, invalid syntax or an invalid
    pipeline.
    """
    p = Path(path)
    source = str(p)
    suffix = p.suffix.lower()
    if suffix not in SUFFIXES:
        raise PipelineFileError(
            source, [f"unsupported file type {p.suffix!r} (use .yaml, .yml or .json)"]
        )
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PipelineFileError(source, ["file not found"]) from None
    except UnicodeDecodeError as exc:
        raise PipelineFileError(source, [f"not UTF-8 text: {exc.reason}"]) from None
    except OSError as exc:
        raise PipelineFileError(source, [f"cannot read file: {exc.strerror or exc}"]) from None
    data = _parse_json(text, source) if suffix == ".json" else _parse_yaml(text, source)
    if data is None:
        raise PipelineFileError(source, ["the file is empty"])
    return spec_from_mapping(data, Path(os.path.abspath(p.parent)), source=source)


def load_pipeline_text(
    text: str, base_dir: Path | None = None, *, source: str = "<text>"
) -> PipelineSpec:
    """Compile a pipeline given as YAML (or JSON, which YAML reads too) text.

    Relative function files are resolved against ``base_dir`` (default: the
    current directory); ``source`` names the text in errors. Raises
    ``PipelineFileError`` like ``load_pipeline_file``.
    """
    data = _parse_yaml(text, source)
    if data is None:
        raise PipelineFileError(source, ["the text is empty"])
    return spec_from_mapping(data, base_dir, source=source)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys instead of keeping the last."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        try:
            duplicate = key in seen
        except TypeError:  # unhashable: construct_mapping reports it
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"found duplicate key {key!r}",
                key_node.start_mark,
            )
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def _parse_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        where = ""
        if exc.problem_mark is not None:
            where = f" at line {exc.problem_mark.line + 1}, column {exc.problem_mark.column + 1}"
        detail = exc.problem or "syntax error"
        if exc.context:
            detail += f" ({exc.context})"
        raise PipelineFileError(source, [f"invalid YAML{where}: {detail}"]) from None
    except yaml.YAMLError as exc:
        raise PipelineFileError(source, [f"invalid YAML: {exc}"]) from None


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _parse_json(text: str, source: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_unique_pairs)
    except json.JSONDecodeError as exc:
        raise PipelineFileError(
            source, [f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"]
        ) from None
    except ValueError as exc:
        raise PipelineFileError(source, [f"invalid JSON: {exc}"]) from None

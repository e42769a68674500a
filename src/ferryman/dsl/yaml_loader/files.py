"""Reading pipeline files: YAML (duplicate keys refused) or JSON.

Bounded: a file larger than ``MAX_FILE_BYTES`` is refused before it is
read, and a YAML document whose aliases would expand it to more than
``MAX_NODES`` nodes (a "billion laughs") or that refers to itself is refused
before anything is built from it (``ferryman.yaml_reader``, shared with
every other YAML ferryman reads).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ferryman.domain.spec import PipelineSpec
from ferryman.dsl.yaml_loader.compiler import spec_from_mapping
from ferryman.dsl.yaml_loader.context import PipelineFileError
from ferryman.yaml_reader import MAX_NODES, YamlError, parse_yaml

SUFFIXES = (".yaml", ".yml", ".json")
#: The largest pipeline file read (the API's FERRYMAN_MAX_SPEC_BYTES default).
MAX_FILE_BYTES = 4 * 1024 * 1024


def load_pipeline_file(
    path: str | Path, *, max_bytes: int = MAX_FILE_BYTES, max_nodes: int = MAX_NODES
) -> PipelineSpec:
    """Read a ``.yaml``/``.yml``/``.json`` pipeline file and compile it.

    Relative function files are resolved against the file's directory. Raises
    ``PipelineFileError`` for an unreadable file, invalid syntax, a file past
    ``max_bytes`` or (YAML) past ``max_nodes`` nodes with its aliases
    expanded, or an invalid pipeline.
    """
    p = Path(path)
    source = str(p)
    suffix = p.suffix.lower()
    if suffix not in SUFFIXES:
        raise PipelineFileError(
            source, [f"unsupported file type {p.suffix!r} (use .yaml, .yml or .json)"]
        )
    try:
        size = p.stat().st_size
        if size > max_bytes:
            raise PipelineFileError(
                source, [f"the file is {size} bytes; pipeline files are limited to {max_bytes}"]
            )
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PipelineFileError(source, ["file not found"]) from None
    except UnicodeDecodeError as exc:
        raise PipelineFileError(source, [f"not UTF-8 text: {exc.reason}"]) from None
    except OSError as exc:
        raise PipelineFileError(source, [f"cannot read file: {exc.strerror or exc}"]) from None
    if len(text) > max_bytes:  # a file that grew since stat()
        raise PipelineFileError(source, [f"the file is larger than {max_bytes} bytes"])
    data = _parse_json(text, source) if suffix == ".json" else _parse_yaml(text, source, max_nodes)
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


def _parse_yaml(text: str, source: str, max_nodes: int = MAX_NODES) -> Any:
    try:
        return parse_yaml(text, max_nodes)
    except YamlError as exc:
        raise PipelineFileError(source, [str(exc)]) from None


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

"""Reading pipeline files: YAML (duplicate keys refused) or JSON.

Bounded: a file larger than ``MAX_FILE_BYTES`` is refused before it is
read, and a YAML document whose aliases would expand it to more than
``MAX_NODES`` nodes (a "billion laughs") or that refers to itself is refused
before anything is built from it: aliases are cheap to parse and share one
object, but everything that walks the result pays for every expansion.
"""

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
#: The largest pipeline file read (the API's FERRYMAN_MAX_SPEC_BYTES default).
MAX_FILE_BYTES = 4 * 1024 * 1024
#: The most nodes a YAML document may have with every alias expanded.
MAX_NODES = 1_000_000


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


class TooManyNodes(yaml.YAMLError):
    """The document would expand past the node budget (or into itself)."""


def expanded_size(root: yaml.Node, limit: int) -> int:
    """How many nodes ``root`` has with every alias expanded, counting up to
    just past ``limit`` (then ``TooManyNodes``). Each distinct node is
    measured once (aliases share nodes), without recursion."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            total = 1 + sum(sizes[id(c)] for c in _children(node))
            if total > limit:
                raise TooManyNodes(
                    f"the document expands to more than {limit} nodes (through its aliases)"
                )
            sizes[key] = total
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise TooManyNodes("an alias refers to a node that contains it (endless document)")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in sizes)
    return sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _UniqueKeyLoader(_BaseLoader):  # type: ignore[valid-type,misc]
    """The safe loader (libyaml's when installed) that rejects duplicate mapping
    keys instead of keeping the last, and documents that expand past
    ``max_nodes`` nodes."""

    max_nodes = MAX_NODES

    def construct_document(self, node: yaml.Node) -> Any:
        expanded_size(node, self.max_nodes)  # before anything is built
        return super().construct_document(node)


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


def _parse_yaml(text: str, source: str, max_nodes: int = MAX_NODES) -> Any:
    loader = _UniqueKeyLoader(text)  # a SafeLoader subclass
    loader.max_nodes = max_nodes
    try:
        return loader.get_single_data()
    except TooManyNodes as exc:
        raise PipelineFileError(source, [f"refused: {exc}"]) from None
    except RecursionError:
        raise PipelineFileError(source, ["invalid YAML: nested too deeply"]) from None
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
    finally:
        loader.dispose()


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

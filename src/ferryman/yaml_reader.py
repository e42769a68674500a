"""Reading YAML that ferryman did not write: bounded, strict, one way.

Every YAML document ferryman reads (pipeline files, the subscriptions file,
a ``--params-file``, a Kubernetes patch file) goes through ``parse_yaml``:

- the safe loader (libyaml's when installed): plain data, no objects;
- a document whose aliases would expand it to more than ``MAX_NODES`` nodes
  (a "billion laughs"), or that refers to itself, is refused before
  anything is built from it: aliases are cheap to parse and share one
  object, but everything that walks the result (validation, JSON encoding,
  storing) pays for every expansion;
- duplicate mapping keys are refused instead of the last one silently
  winning.

Errors are ``YamlError`` with a one-line message that says where ("invalid
YAML at line 4, column 4: ..."); callers put the file's name in front.
Only PyYAML and the standard library are imported here.
"""

from __future__ import annotations

from typing import Any

import yaml

#: The most nodes a YAML document may have with every alias expanded.
MAX_NODES = 1_000_000


class YamlError(ValueError):
    """A YAML text that cannot be read (the message says why and where)."""


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


class BoundedLoader(_BaseLoader):  # type: ignore[valid-type,misc]
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


BoundedLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse_yaml(text: str, max_nodes: int = MAX_NODES) -> Any:
    """The data of one YAML document (None when empty); ``YamlError`` when
    it is not valid YAML, has a duplicate key, or expands (through its
    aliases) past ``max_nodes`` nodes."""
    loader = BoundedLoader(text)
    loader.max_nodes = max_nodes
    try:
        return loader.get_single_data()
    except TooManyNodes as exc:
        raise YamlError(f"refused: {exc}") from None
    except RecursionError:
        raise YamlError("invalid YAML: nested too deeply") from None
    except yaml.MarkedYAMLError as exc:
        where = ""
        if exc.problem_mark is not None:
            where = f" at line {exc.problem_mark.line + 1}, column {exc.problem_mark.column + 1}"
        detail = exc.problem or "syntax error"
        if exc.context:
            detail += f" ({exc.context})"
        raise YamlError(f"invalid YAML{where}: {detail}") from None
    except yaml.YAMLError as exc:
        raise YamlError(f"invalid YAML: {exc}") from None
    finally:
        loader.dispose()

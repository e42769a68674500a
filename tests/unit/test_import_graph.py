"""The import graph of ``ferryman`` stays clean: no circle between modules
(imports inside functions count), and no private name imported from another
module.

The layering rules themselves are import-linter contracts in
``pyproject.toml`` (run by ``lint-imports``); these two checks are ones
import-linter does not offer.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import grimp
import pytest

import ferryman

SRC = Path(ferryman.__file__).resolve().parent.parent


# --------------------------------------------------------------------------- cycles


def strongly_connected(graph: Mapping[str, Iterable[str]]) -> list[set[str]]:
    """The strongly connected components of ``graph`` with more than one node
    (Tarjan's algorithm, iterative: the graph is deep enough to make recursion
    fragile)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[set[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    # Every import statement counts: top-level, inside functions, under
    # ``if TYPE_CHECKING:``.
    return grimp.build_graph("ferryman", cache_dir=None)


def _edges(graph: grimp.ImportGraph) -> dict[str, set[str]]:
    return {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}


def _describe(graph: grimp.ImportGraph, component: set[str]) -> str:
    lines = [", ".join(sorted(component))]
    for importer in sorted(component):
        for imported in sorted(graph.find_modules_directly_imported_by(importer) & component):
            for d in graph.get_import_details(importer=importer, imported=imported):
                lines.append(f"    {importer}:{d['line_number']}: {d['line_contents']}")
    return "\n".join(lines)


def test_no_import_cycles(graph: grimp.ImportGraph) -> None:
    cycles = list(strongly_connected(_edges(graph)))
    assert cycles == [], "import circles:\n" + "\n".join(_describe(graph, c) for c in cycles)


def test_the_graph_sees_imports_inside_functions(graph: grimp.ImportGraph) -> None:
    # ``ferryman.cli.embedded`` imports the worker only inside a function.
    assert "ferryman.engine.worker" in graph.find_modules_directly_imported_by(
        "ferryman.cli.embedded"
    )


@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        ({"a": ["b"], "b": ["c"], "c": []}, []),
        ({"a": ["b"], "b": ["a"]}, [{"a", "b"}]),
        ({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}, [{"a", "b", "c"}]),
        ({"a": ["a"]}, []),  # a module importing itself is no circle between modules
        ({"a": ["b"], "b": ["a"], "c": ["d"], "d": ["c"]}, [{"a", "b"}, {"c", "d"}]),
    ],
)
def test_strongly_connected(edges: dict[str, list[str]], expected: list[set[str]]) -> None:
    assert sorted(map(sorted, strongly_connected(edges))) == sorted(map(sorted, expected))


# --------------------------------------------------------------------------- private names


def _module_name(path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


def _is_module(name: str) -> bool:
    base = SRC.joinpath(*name.split("."))
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_imports(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """Private names of other ferryman modules that ``source`` uses: imported
    (``from ferryman.x import _y``) or reached through an imported module
    (``from ferryman import x`` then ``x._y``)."""
    found: list[tuple[int, str]] = []
    modules: dict[str, str] = {}  # local name -> ferryman module it is bound to
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                package = (module if is_package else module.rpartition(".")[0]).split(".")
                base = ".".join(package[: len(package) - (node.level - 1)])
                target = ".".join(p for p in (base, node.module or "") if p)
            else:
                target = node.module or ""
            if target.split(".")[0] != "ferryman":
                continue
            for alias in node.names:
                full = f"{target}.{alias.name}"
                if _is_module(full):
                    modules[alias.asname or alias.name] = full
                if _private(alias.name) and (target != module or _is_module(full)):
                    found.append((node.lineno, full))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "ferryman" and alias.asname:
                    modules[alias.asname] = alias.name
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
            and modules[node.value.id] != module
            and _private(node.attr)
        ):
            found.append((node.lineno, f"{modules[node.value.id]}.{node.attr}"))
    return found


def test_no_private_names_imported_across_modules() -> None:
    problems = []
    for path in sorted((SRC / "ferryman").rglob("*.py")):
        module, is_package = _module_name(path)
        for line, name in private_imports(path.read_text(), module, is_package):
            problems.append(f"{module}:{line} uses {name}")
    assert problems == [], "give these a public name or an API:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    "source",
    [
        "from ferryman.engine.callback_sender import _retry_after",
        "def f():\n    from ferryman.cli.run import _execute_embedded\n",
        "from .queue import _followers",
        "from ferryman.engine import callback_sender\ncallback_sender._retry_after(1)",
        "import ferryman.engine.callback_sender as d\nd._CLIENT",
    ],
)
def test_private_import_checker_catches(source: str) -> None:
    assert private_imports(source, "ferryman.engine.event_deliverer.loop") != []


@pytest.mark.parametrize(
    "source",
    [
        "from ferryman.engine.callback_sender import retry_after",
        "from ferryman import __version__",
        "from pydantic import _internal",  # not ferryman's business
        "from ferryman.engine import callback_sender\ncallback_sender.retry_after(1)",
        "self._x = 1\nobj._y",
    ],
)
def test_private_import_checker_accepts(source: str) -> None:
    assert private_imports(source, "ferryman.engine.event_deliverer.loop") == []

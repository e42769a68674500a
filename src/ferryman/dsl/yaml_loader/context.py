"""The state of one compilation of a pipeline file: where relative files are
found, the names known so far, and every problem found (a compilation
collects them all instead of stopping at the first)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


class PipelineFileError(ValueError):
    """A pipeline file (or mapping) is invalid; ``problems`` lists every problem."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        listed = "".join(f"\n  - {p}" for p in problems)
        super().__init__(f"invalid pipeline file {source}:{listed}")


class Context:
    """One compilation: collects every problem instead of stopping at the first."""

    def __init__(self, base_dir: Path, check_files: bool) -> None:
        self.base_dir = base_dir
        self.check_files = check_files
        self.problems: list[str] = []
        #: problems of the graph (names, references, cycles) found by our own checks
        self.graph_problems = 0
        self.param_names: list[str] = []
        self.param_order: list[str] = []  # names of the param dicts passed on, by index
        self.step_names: list[str] = []

    def problem(self, path: str, message: str, *, graph: bool = False) -> None:
        """Record a problem at ``path`` (``steps[1].retries``; empty: the top level)."""
        self.problems.append(f"{path}: {message}" if path else message)
        if graph:
            self.graph_problems += 1

    def check_step_ref(self, ref: str, step: Any, path: str) -> bool:
        """Whether ``step`` may refer to step ``ref``; a problem at ``path`` if not."""
        if ref == step:
            self.problem(path, f"step {ref!r} depends on itself", graph=True)
            return False
        if ref not in self.step_names:
            known = ", ".join(self.step_names) or "none"
            self.problem(path, f"unknown step {ref!r} (steps: {known})", graph=True)
            return False
        return True

    def check_param_ref(self, ref: str, path: str) -> bool:
        """Whether parameter ``ref`` exists; a problem at ``path`` if not."""
        if ref in self.param_names:
            return True
        known = ", ".join(self.param_names) or "none"
        self.problem(path, f"unknown parameter {ref!r} (params: {known})", graph=True)
        return False

    def abspath(self, target: str) -> str:
        """``target`` made absolute against the pipeline file's directory."""
        return os.path.abspath(os.path.join(self.base_dir, os.path.expanduser(target)))

    def check_file(self, file: str, path: str) -> None:
        """A problem at ``path`` when ``file`` must exist and does not."""
        if self.check_files and not os.path.isfile(file):
            self.problem(path, f"file not found: {file}")


def describe(value: Any) -> str:
    """What a value is, for messages: ``a string``, ``a list``, ``null`` …"""
    if value is None:
        return "null"
    return {
        str: "a string",
        list: "a list",
        dict: "a mapping",
        int: "a number",
        float: "a number",
        bool: "a boolean",
    }.get(type(value), type(value).__name__)


def clean_message(msg: str) -> str:
    """A pydantic message without its ``Value error, `` prefix."""
    return msg.removeprefix("Value error, ")


def join_path(prefix: str, rest: str) -> str:
    """``prefix`` + ``rest`` as one path (``steps[0]`` + ``retries``)."""
    if not rest:
        return prefix
    return f"{prefix}{rest}" if rest.startswith("[") else f"{prefix}.{rest}"


def loc_path(loc: tuple[int | str, ...]) -> str:
    """A pydantic location as a path: ``("steps", 0, "x")`` → ``steps[0].x``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out

"""The plugin registry: built-ins, entry points, duplicate ids and defaults."""

from __future__ import annotations

from typing import Any

import pytest

from ferryman.plugins.base import Phase, SyncPlugin, TaskContext
from ferryman.plugins.registry import BUILTIN, PluginError, PluginRegistry, Registration


class OtherCall(SyncPlugin):
    id = "other_call"
    task_types = frozenset({"http_call", "ping"})
    default_for = frozenset({"ping"})

    async def do(self, ctx: TaskContext) -> Any:
        return "pong"


class GreedyCall(OtherCall):
    id = "greedy_call"
    default_for = frozenset({"http_call"})


class WrongDefault(OtherCall):
    id = "wrong_default"
    default_for = frozenset({"nope"})


def regs(*extra: tuple[str, str]) -> list[Registration]:
    base = [Registration(k, v, "built-in") for k, v in BUILTIN.items()]
    return base + [Registration(i, t, "tests") for i, t in extra]


def test_builtins_and_defaults() -> None:
    r = PluginRegistry(regs((OtherCall.id, f"{__name__}:OtherCall")))
    assert set(r.load()) == {"http_call", "http_job", "other_call"}
    assert r.for_task("http_job").id == "http_job"
    assert r.for_task("ping").id == "other_call"
    assert r.for_task("http_call", "other_call").id == "other_call"
    with pytest.raises(PluginError, match="unknown task type 'x' \\(known: http_call"):
        r.for_task("x")
    with pytest.raises(PluginError, match="plugin 'http_job' does not handle task type 'ping'"):
        r.for_task("ping", "http_job")
    with pytest.raises(PluginError, match="unknown plugin 'nope'"):
        r.for_task("ping", "nope")


def test_a_duplicate_id_is_an_error_at_load() -> None:
    r = PluginRegistry(regs(("http_job", f"{__name__}:OtherCall")))
    with pytest.raises(PluginError, match="plugin id 'http_job' is registered twice"):
        r.load()


def test_two_defaults_for_one_type_is_an_error() -> None:
    r = PluginRegistry(regs((GreedyCall.id, f"{__name__}:GreedyCall")))
    with pytest.raises(
        PluginError, match="task type 'http_call' has two default plugins: 'http_call' and"
    ):
        r.load()


def test_a_default_for_a_type_it_does_not_handle_and_bad_targets() -> None:
    with pytest.raises(PluginError, match="default for 'nope', not a type it handles"):
        PluginRegistry(regs((WrongDefault.id, f"{__name__}:WrongDefault"))).load()
    with pytest.raises(PluginError, match="cannot be loaded"):
        PluginRegistry(regs(("gone", "no.such.module:X"))).load()
    with pytest.raises(PluginError, match="declares the id 'other_call'"):
        PluginRegistry(regs(("renamed", f"{__name__}:OtherCall"))).load()
    with pytest.raises(PluginError, match="is not a Plugin class"):
        PluginRegistry(regs(("phase", f"{__name__}:Phase"))).load()
    assert Phase.failed("x").terminal and not Phase.running().terminal

"""``ferryman plugins``: the installed web-API plugins, their task types and
effective limits (``ls``, ``describe``)."""

from __future__ import annotations

import json
from typing import Any

import typer

from ferryman.cli.common import clean_errors, console, escape, fail, settings, table

app = typer.Typer(help="Web-API plugins (task steps).", no_args_is_help=True)


def _effective(plugin_id: str) -> dict[str, Any]:
    """The limits a worker with these settings uses for ``plugin_id``."""
    from ferryman.plugins.limits import PluginLimits, configured_limits

    given = configured_limits(settings()).get(plugin_id, {})
    return PluginLimits.model_validate(given).model_dump()


def _info(plugin_id: str) -> dict[str, Any]:
    from ferryman.plugins.base import AsyncPlugin
    from ferryman.plugins.registry import PluginRegistry, discovered

    cls = PluginRegistry().plugin_class(plugin_id)
    source = next((r.source for r in discovered() if r.id == plugin_id), "?")
    return {
        "id": plugin_id,
        "kind": "async" if issubclass(cls, AsyncPlugin) else "sync",
        "task_types": sorted(cls.task_types),
        "default_for": sorted(cls.default_for),
        "source": source,
        "description": cls.description,
    }


@app.command("ls")
def ls(as_json: bool = typer.Option(False, "--json", help="Print JSON")) -> None:
    """List the installed plugins and the task types they handle."""
    with clean_errors():
        from ferryman.plugins.registry import PluginRegistry

        rows = [_info(p) for p in sorted(PluginRegistry().load())]
        if as_json:
            console.print_json(json.dumps(rows))
            return
        t = table("plugin", "kind", "task types", "default for", "source", "description")
        for r in rows:
            t.add_row(
                escape(r["id"]), r["kind"], escape(", ".join(r["task_types"])),
                escape(", ".join(r["default_for"]) or "-"), escape(r["source"]),
                escape(r["description"]),
            )  # fmt: skip
        console.print(t)


@app.command("describe")
def describe(
    plugin_id: str = typer.Argument(..., help="Plugin id (see `ferryman plugins ls`)"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON"),
    counters: bool = typer.Option(
        True, "--counters/--no-counters", help="Read the plugin's counters from the database"
    ),
) -> None:
    """One plugin: its task types, effective limits, task config fields and counters."""
    with clean_errors():
        from ferryman.plugins.registry import PluginRegistry

        registry = PluginRegistry()
        if plugin_id not in registry.load():
            known = ", ".join(sorted(registry.load()))
            fail(f"unknown plugin {plugin_id!r} (installed: {known})")
        info = _info(plugin_id)
        info["limits"] = _effective(plugin_id)
        schema = registry.plugin_class(plugin_id).config_model.model_json_schema()
        info["config_fields"] = sorted(schema.get("properties", {}))
        info["required_config"] = sorted(schema.get("required", []))
        if counters:
            from ferryman.cli.common import open_store
            from ferryman.services.task_state import DbTaskState

            info["counters"] = DbTaskState(open_store()).counters().get(plugin_id, {})
        if as_json:
            console.print_json(json.dumps(info))
            return
        console.print(
            f"[bold]{escape(plugin_id)}[/] ({info['kind']}): {escape(info['description'])}"
        )
        console.print(f"task types: {escape(', '.join(info['task_types']))}")
        console.print(f"default for: {escape(', '.join(info['default_for']) or '-')}")
        console.print(f"source: {escape(info['source'])}")
        console.print(f"config fields: {escape(', '.join(info['config_fields']))}")
        console.print(f"required: {escape(', '.join(info['required_config']) or '-')}")
        t = table("limit", "value")
        for k, v in info["limits"].items():
            t.add_row(k, escape(str(v)))
        console.print(t)
        if counters:
            c = table("counter", "value")
            for k, v in sorted(info["counters"].items()):
                c.add_row(escape(k), str(v))
            console.print(c if info["counters"] else "counters: none recorded yet")

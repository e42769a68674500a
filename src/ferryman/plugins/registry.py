"""Finding plugins: the built-ins and the ``ferryman.plugins`` entry-point group.

An entry point's name is the plugin's id and its value ``module:Class``.
Classes are imported when the registry is checked (``PluginRegistry.load``:
a worker does it at start-up, so a duplicate id or two defaults for one task
type stop it with a clear message); instances are made on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from ferryman.plugins.base import Plugin

GROUP = "ferryman.plugins"
BUILTIN: dict[str, str] = {
    "http_call": "ferryman.plugins.http:HttpCallPlugin",
    "http_job": "ferryman.plugins.http:HttpJobPlugin",
}


class PluginError(ValueError):
    """A plugin cannot be found, loaded or registered (the message says why)."""


@dataclass(frozen=True)
class Registration:
    """One plugin id and where its class comes from."""

    id: str
    target: str
    source: str  # "built-in" or the distribution that registered it


def discovered() -> list[Registration]:
    """Every registration: the built-ins, then the entry points."""
    found = [Registration(k, v, "built-in") for k, v in BUILTIN.items()]
    for ep in entry_points(group=GROUP):
        dist = getattr(getattr(ep, "dist", None), "name", None) or "?"
        found.append(Registration(ep.name, ep.value, dist))
    return found


def _load_class(reg: Registration) -> type[Plugin]:
    module, _, attr = reg.target.partition(":")
    try:
        cls: Any = getattr(importlib.import_module(module), attr)
    except Exception as exc:
        raise PluginError(f"plugin {reg.id!r} ({reg.target}): cannot be loaded: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, Plugin)):
        raise PluginError(f"plugin {reg.id!r}: {reg.target} is not a Plugin class")
    if getattr(cls, "id", None) != reg.id:
        raise PluginError(
            f"plugin {reg.id!r}: {reg.target} declares the id {getattr(cls, 'id', None)!r}"
        )
    return cls


class PluginRegistry:
    """The installed plugins, checked: ids unique, at most one default per type."""

    def __init__(self, registrations: Iterable[Registration] | None = None) -> None:
        self._registrations = list(discovered() if registrations is None else registrations)
        self._classes: dict[str, type[Plugin]] | None = None
        self._defaults: dict[str, str] = {}

    def load(self) -> dict[str, type[Plugin]]:
        """Import every plugin class and check the registrations (once).

        ``PluginError`` for a duplicate id, two defaults for one task type, or
        a class that cannot be loaded."""
        if self._classes is not None:
            return self._classes
        seen: dict[str, Registration] = {}
        for reg in self._registrations:
            if reg.id in seen:
                first = seen[reg.id]
                raise PluginError(
                    f"plugin id {reg.id!r} is registered twice: {first.target} "
                    f"({first.source}) and {reg.target} ({reg.source})"
                )
            seen[reg.id] = reg
        classes = {reg.id: _load_class(reg) for reg in self._registrations}
        defaults: dict[str, str] = {}
        for pid, cls in classes.items():
            for t in sorted(cls.default_for):
                if t not in cls.task_types:
                    raise PluginError(
                        f"plugin {pid!r} is the default for {t!r}, not a type it handles"
                    )
                if t in defaults:
                    raise PluginError(
                        f"task type {t!r} has two default plugins: {defaults[t]!r} and {pid!r}"
                    )
                defaults[t] = pid
        self._classes, self._defaults = classes, defaults
        return classes

    def plugin_class(self, plugin_id: str) -> type[Plugin]:
        classes = self.load()
        cls = classes.get(plugin_id)
        if cls is None:
            known = ", ".join(sorted(classes)) or "none"
            raise PluginError(f"unknown plugin {plugin_id!r} (installed: {known})")
        return cls

    def for_task(self, task_type: str, plugin_id: str | None = None) -> type[Plugin]:
        """The plugin of a task step: ``plugin_id`` if given, else the type's default."""
        if plugin_id is not None:
            cls = self.plugin_class(plugin_id)
            if task_type not in cls.task_types:
                types = ", ".join(sorted(cls.task_types))
                raise PluginError(
                    f"plugin {plugin_id!r} does not handle task type {task_type!r} "
                    f"(it handles {types})"
                )
            return cls
        self.load()
        pid = self._defaults.get(task_type)
        if pid is None:
            handlers = sorted(p for p, c in self.load().items() if task_type in c.task_types)
            if handlers:
                raise PluginError(
                    f"task type {task_type!r} has no default plugin: name one of "
                    f"{', '.join(handlers)} with plugin:"
                )
            known = sorted({t for c in self.load().values() for t in c.task_types})
            raise PluginError(
                f"unknown task type {task_type!r} (known: {', '.join(known) or 'none'})"
            )
        return self.plugin_class(pid)

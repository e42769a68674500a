"""Find infrastructure kinds: built-ins plus the ``ferryman.infrastructure``
entry-point group, so third parties can add their own."""

from __future__ import annotations

import importlib
from functools import lru_cache
from importlib.metadata import entry_points
from typing import Any

from ferryman.infra.base import Infrastructure

GROUP = "ferryman.infrastructure"
BUILTIN = {
    "process": "ferryman.infra.process:ProcessInfrastructure",
    "inline": "ferryman.infra.inline:InlineInfrastructure",
    "docker": "ferryman.infra.docker:DockerInfrastructure",
    "kubernetes": "ferryman.infra.kubernetes:KubernetesInfrastructure",
}


class UnknownInfrastructure(LookupError):
    """No infrastructure of that kind is installed."""


@lru_cache(maxsize=1)
def available() -> dict[str, str]:
    """Kind name → ``module:Class`` for every known infrastructure."""
    found = dict(BUILTIN)
    for ep in entry_points(group=GROUP):
        found.setdefault(ep.name, ep.value)
    return found


def infrastructure_class(kind: str) -> type[Infrastructure]:
    target = available().get(kind)
    if target is None:
        raise UnknownInfrastructure(
            f"unknown infrastructure {kind!r} (available: {', '.join(sorted(available()))})"
        )
    module, _, attr = target.partition(":")
    cls: Any = getattr(importlib.import_module(module), attr)
    if not (isinstance(cls, type) and issubclass(cls, Infrastructure)):
        raise UnknownInfrastructure(f"{target} is not an Infrastructure class")
    return cls


class InfraPool:
    """One instance per kind, created on first use, closed together."""

    def __init__(self, configs: dict[str, dict[str, Any]] | None = None) -> None:
        self._configs = configs or {}
        self._instances: dict[str, Infrastructure] = {}

    def get(self, kind: str) -> Infrastructure:
        inst = self._instances.get(kind)
        if inst is None:
            cls = infrastructure_class(kind)
            cfg = cls.config_model.model_validate(self._configs.get(kind, {}))
            inst = cls(cfg)
            self._instances[kind] = inst
        return inst

    def validate(self) -> None:
        """Check every configured kind's settings now (at start), not at the
        first step: ``ValueError`` naming the kind and each problem."""
        for kind, cfg in self._configs.items():
            try:
                cls = infrastructure_class(kind)
            except UnknownInfrastructure as exc:
                raise ValueError(f"FERRYMAN_INFRA_CONFIG: {exc}") from None
            try:
                cls.config_model.model_validate(cfg)
            except Exception as exc:  # pydantic's ValidationError lists every problem
                raise ValueError(f"FERRYMAN_INFRA_CONFIG[{kind!r}]: {exc}") from None

    def close(self) -> None:
        for inst in self._instances.values():
            inst.close()
        self._instances.clear()

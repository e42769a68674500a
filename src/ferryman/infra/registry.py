"""Find infrastructure kinds: built-ins plus the ``ferryman.infrastructure``
entry-point group, so third parties can add their own; and check that an
infrastructure runs a step's kind (``check_step``, the one such check)."""

from __future__ import annotations

import importlib
import threading
from collections.abc import Mapping
from functools import lru_cache
from importlib.metadata import entry_points
from typing import Any

from ferryman.domain.spec import PipelineSpec, StepSpec
from ferryman.infra.base import Infrastructure

GROUP = "ferryman.infrastructure"
BUILTIN = {
    "process": "ferryman.infra.process:ProcessInfrastructure",
    "inline": "ferryman.infra.inline:InlineInfrastructure",
    "docker": "ferryman.infra.docker:DockerInfrastructure",
    "kubernetes": "ferryman.infra.kubernetes:KubernetesInfrastructure",
    "task": "ferryman.infra.task:TaskInfrastructure",
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


class UnsupportedStepKind(ValueError):
    """A step's kind is not among the kinds its infrastructure runs."""


def runners_of(step_kind: str) -> list[str]:
    """The installed infrastructures that run steps of ``step_kind``.

    Imports every infrastructure's module: meant for error messages."""
    found = []
    for name in sorted(available()):
        try:
            cls = infrastructure_class(name)
        except Exception:  # a broken plugin must not hide the real message
            continue
        if step_kind in cls.kinds:
            found.append(name)
    return found


def check_step(infra: type[Infrastructure], step: StepSpec) -> None:
    """Raise ``UnsupportedStepKind`` unless ``infra`` runs the kind of ``step``."""
    if step.kind in infra.kinds:
        return
    runs = ", ".join(sorted(infra.kinds)) or "no"
    message = (
        f"step {step.name!r} is a {step.kind} step: "
        f"the {infra.kind} infrastructure runs {runs} steps only"
    )
    others = runners_of(step.kind)
    if others:
        message += f"; {step.kind} steps run on {' or '.join(others)}"
    raise UnsupportedStepKind(message)


def kind_problems(spec: PipelineSpec) -> list[tuple[int, str]]:
    """``(step index, why)`` for each step of ``spec`` whose own infrastructure
    (the step's, else the pipeline's) does not run its kind: checked at deploy
    time. An infrastructure that is not installed here is not checked (the
    workers may have it), nor is a run's ``infrastructure`` override."""
    problems = []
    for i, step in enumerate(spec.steps):
        name = step.infrastructure or spec.infrastructure
        if name not in available():
            continue
        try:
            cls = infrastructure_class(name)
        except Exception:  # cannot be loaded here: the worker will say why
            continue
        try:
            check_step(cls, step)
        except UnsupportedStepKind as exc:
            problems.append((i, str(exc)))
    return problems


class InfraPool:
    """One instance per kind, created on first use, closed together.

    ``instances``: infrastructures made by the caller, by the name steps and
    runs use for them; they are used as they are, whether or not that name is
    installed (a test's ``ferryman.testing.FakeInfrastructure``, say)."""

    def __init__(
        self,
        configs: dict[str, dict[str, Any]] | None = None,
        instances: Mapping[str, Infrastructure] | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> None:
        self._configs = configs or {}
        self._instances: dict[str, Infrastructure] = dict(instances or {})
        #: What the worker shares with the infrastructures it makes (``bind``).
        self.context: Mapping[str, Any] = context or {}
        self._lock = threading.Lock()

    def get(self, kind: str) -> Infrastructure:
        inst = self._instances.get(kind)
        if inst is not None:
            return inst
        # Attempt threads ask at once: one instance per kind, or some are never closed.
        with self._lock:
            return self._make(kind)

    def _make(self, kind: str) -> Infrastructure:
        inst = self._instances.get(kind)
        if inst is None:
            cls = infrastructure_class(kind)
            cfg = cls.config_model.model_validate(self._configs.get(kind, {}))
            inst = cls(cfg)
            if self.context:
                inst.bind(self.context)
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

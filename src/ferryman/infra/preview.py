"""What each step of a pipeline would launch, without launching anything.

``preview_pipeline`` builds each step's ``StepLaunch`` the way the worker
does (same infrastructure choice: run override > step > pipeline; same
overrides; same env and secrets), refuses a step whose kind that
infrastructure does not run (``registry.check_step``, as the worker does) and
asks the infrastructure for ``preview``. Values that only exist at run time
are shown as placeholders: an upstream step's output as ``<output of
STEP>``, run ids as ``<run id>``.
Secret values are never shown: each infrastructure masks them, and a secret
that is not set here is previewed as ``<not set>`` (still masked).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ferryman.domain.spec import PipelineSpec, iter_refs, resolve
from ferryman.infra.base import StepLaunch
from ferryman.infra.registry import InfraPool, check_step
from ferryman.redaction import Redactor


@dataclass
class StepPreview:
    """One step's preview: its infrastructure and what that would launch."""

    step: str
    infrastructure: str
    launch: dict[str, Any]


class UnknownStep(LookupError):
    """``--step`` names no step of the pipeline."""


def _mask_all(value: Any, secrets: dict[str, str]) -> Any:
    """Belt and braces: mask any secret value (in any form the redactor
    knows) left anywhere in a preview."""
    return Redactor.of(secrets.values()).value(value)


def preview_pipeline(
    spec: PipelineSpec,
    params: dict[str, Any],
    *,
    namespace: str = "default",
    step: str | None = None,
    infrastructure: str | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    pool: InfraPool | None = None,
) -> list[StepPreview]:
    """Previews of every step (or of ``step``), in the pipeline's order."""
    names = [s.name for s in spec.steps]
    if step is not None and step not in names:
        raise UnknownStep(f"no step {step!r} in pipeline {spec.name!r} (steps: {', '.join(names)})")
    own_pool = pool is None
    infra = pool or InfraPool()
    placeholders = {s.name: f"<output of {s.name}>" for s in spec.steps}
    out: list[StepPreview] = []
    try:
        for s in spec.steps:
            if step is not None and s.name != step:
                continue
            kind = infrastructure or s.infrastructure or spec.infrastructure
            secrets = {n: os.environ.get(n, "<not set>") for n in s.secrets}
            deps = {ref for k, ref in iter_refs(s.inputs) if k == "$step"}
            launch = StepLaunch(
                run_id="<run id>",
                node=s.name,
                attempt=1,
                pipeline=spec.name,
                namespace=namespace,
                step=s,
                inputs=resolve(s.inputs, params, {d: placeholders[d] for d in deps}),
                params=params,
                nonce="<nonce>",
                env=dict(s.env),
                secrets=secrets,
                labels=dict(spec.labels),
                overrides={**s.infra_overrides, **(overrides or {}).get(s.name, {})},
            )
            runner = infra.get(kind)
            check_step(type(runner), s)
            shown = runner.preview(launch)
            out.append(StepPreview(s.name, kind, _mask_all(shown, secrets)))
    finally:
        if own_pool:
            infra.close()
    return out

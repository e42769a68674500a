"""Job manifests: the base a Job starts from, and JSON-patch customizations.

- ``check_base_manifest``: a user's base Job manifest must hold every path
  in ``REQUIRED_PATHS``; all missing paths are reported together.
- ``apply_customizations``: RFC 6902 JSON patches (``jsonpatch``).
- ``merge_resources``: container resources from layers.

Pure rules, table-tested in ``tests/unit/test_kubernetes_rules.py``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import jsonpatch
import jsonpointer

#: Name of the step's container when the base manifest does not name one.
DEFAULT_CONTAINER = "ferryman"

REQUIRED_PATHS: tuple[str, ...] = (
    "/apiVersion",
    "/kind",
    "/metadata",
    "/spec",
    "/spec/template",
    "/spec/template/spec",
    "/spec/template/spec/containers",
)


class ManifestError(ValueError):
    """A base manifest or customization that cannot make a valid Job."""


def default_manifest() -> dict[str, Any]:
    """The base Job when the configuration gives none."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {},
        "spec": {
            "template": {
                "metadata": {},
                "spec": {"restartPolicy": "Never", "containers": [{"name": DEFAULT_CONTAINER}]},
            }
        },
    }


def missing_paths(manifest: Mapping[str, Any]) -> list[str]:
    """Every path of ``REQUIRED_PATHS`` that ``manifest`` lacks."""
    missing = []
    for path in REQUIRED_PATHS:
        try:
            jsonpointer.resolve_pointer(manifest, path)
        except jsonpointer.JsonPointerException:
            missing.append(path)
    return missing


def check_base_manifest(manifest: Mapping[str, Any]) -> None:
    """Reject a base manifest that cannot become a step's Job, listing every problem."""
    if not isinstance(manifest, Mapping):
        raise ManifestError("job_manifest must be a mapping (a Job manifest)")
    problems = [f"missing {p}" for p in missing_paths(manifest)]
    if manifest.get("apiVersion") not in (None, "batch/v1"):
        problems.append(f"apiVersion must be batch/v1, not {manifest.get('apiVersion')!r}")
    if manifest.get("kind") not in (None, "Job"):
        problems.append(f"kind must be Job, not {manifest.get('kind')!r}")
    try:
        containers = jsonpointer.resolve_pointer(manifest, "/spec/template/spec/containers")
    except jsonpointer.JsonPointerException:
        containers = None
    if containers is not None and (
        not isinstance(containers, list)
        or not containers
        or not all(isinstance(c, Mapping) for c in containers)
    ):
        problems.append("/spec/template/spec/containers must be a non-empty list of containers")
    if problems:
        raise ManifestError("invalid job_manifest: " + "; ".join(problems))


def parse_patch(ops: Any, source: str = "customizations") -> jsonpatch.JsonPatch:
    """A JSON patch from a list of operations, with a clear error when malformed."""
    if not isinstance(ops, list):
        raise ManifestError(f"{source} must be a list of JSON-patch operations (RFC 6902)")
    problems = []
    for i, op in enumerate(ops):
        if not isinstance(op, Mapping):
            problems.append(f"#{i}: not an object")
            continue
        kind = op.get("op")
        if kind not in ("add", "remove", "replace", "move", "copy", "test"):
            problems.append(
                f"#{i}: op must be add, remove, replace, move, copy or test (got {kind!r})"
            )
        if not isinstance(op.get("path"), str):
            problems.append(f"#{i}: needs a string 'path' (a JSON pointer like /spec/x)")
        if kind in ("add", "replace", "test") and "value" not in op:
            problems.append(f"#{i}: {kind} needs a 'value'")
        if kind in ("move", "copy") and not isinstance(op.get("from"), str):
            problems.append(f"#{i}: {kind} needs a string 'from'")
    if problems:
        raise ManifestError(f"invalid {source}: " + "; ".join(problems))
    try:
        return jsonpatch.JsonPatch(ops)
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
        raise ManifestError(f"invalid {source}: {exc}") from None


def apply_customizations(manifest: dict[str, Any], patch: jsonpatch.JsonPatch) -> dict[str, Any]:
    """Apply ``patch`` to a copy of ``manifest``, naming the operation that failed."""
    doc = copy.deepcopy(manifest)
    for i, op in enumerate(patch.patch):
        try:
            doc = jsonpatch.JsonPatch([op]).apply(doc)
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
            what = f"{op.get('op')} {op.get('path')}"
            raise ManifestError(f"customization #{i} ({what}) failed: {exc}") from None
    return doc


def merge_resources(*layers: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """Container resources from layers (later wins).

    A layer is either ``{"requests": {...}, "limits": {...}}`` or a flat map
    like ``{"cpu": "1", "memory": "1Gi"}``, which sets requests and limits
    to the same values.
    """
    out: dict[str, dict[str, str]] = {}
    for layer in layers:
        if not layer:
            continue
        if set(layer) <= {"requests", "limits"}:
            parts = {k: v for k, v in layer.items() if isinstance(v, Mapping)}
            bad = [k for k, v in layer.items() if not isinstance(v, Mapping)]
            if bad:
                raise ManifestError(f"resources.{bad[0]} must be a mapping like {{'cpu': '1'}}")
        else:
            parts = {"requests": layer, "limits": layer}
        for section, values in parts.items():
            target = out.setdefault(section, {})
            for name, qty in values.items():
                if isinstance(qty, Mapping | list) or qty is None:
                    raise ManifestError(f"resources: {name} must be a quantity like '1' or '1Gi'")
                target[str(name)] = str(qty)
    return out

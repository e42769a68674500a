"""Pure rules of the kubernetes infrastructure: names, labels, Job manifests.

Nothing here talks to a cluster, so every rule is table-tested on its own:

- ``job_name_prefix``: the Job's ``generateName`` — a DNS-1123 label slug of
  at most 45 characters ending in ``-``; the API server appends 5 random
  characters, so two attempts never collide and the name (and the pods'
  ``job-name`` label) stays well under 63 characters.
- ``label_key`` / ``label_value``: any text made into a valid label key
  (optional DNS-subdomain prefix ≤ 253 + ``/`` + name ≤ 63) or value (≤ 63,
  possibly empty).
- ``check_base_manifest``: a user's base Job manifest must hold every path
  in ``REQUIRED_PATHS``; all missing paths are reported together.
- ``apply_customizations``: RFC 6902 JSON patches (``jsonpatch``).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

import jsonpatch
import jsonpointer
from slugify import slugify

#: Prefix of ferryman's own labels (``ferryman.io/run-id`` …).
LABEL_PREFIX = "ferryman.io/"
#: Longest ``generateName`` we send (the API server adds 5 characters).
MAX_PREFIX = 45
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

_LABEL_NAME = re.compile(r"^[a-zA-Z0-9]([-a-zA-Z0-9_.]*[a-zA-Z0-9])?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_NOT_LABEL_CHAR = r"[^-a-zA-Z0-9_.]+"
_TRIM = re.compile(r"^[^a-zA-Z0-9]+|[^a-zA-Z0-9]+$")


class ManifestError(ValueError):
    """A base manifest or customization that cannot make a valid Job."""


# -- names and labels ---------------------------------------------------------


def _trim(text: str, limit: int) -> str:
    """Cut to ``limit`` characters and strip non-alphanumerics from both ends."""
    return _TRIM.sub("", _TRIM.sub("", text)[:limit])


def _label_chars(text: str) -> str:
    """Transliterate to ASCII and turn every run of non-label characters into ``-``."""
    ascii_text = slugify(text, lowercase=False, regex_pattern=_NOT_LABEL_CHAR)
    return re.sub(_NOT_LABEL_CHAR, "-", ascii_text)


def _dns(text: str) -> str:
    """Lower-case ASCII letters, digits and single dashes."""
    return re.sub(r"[^a-z0-9]+", "-", _label_chars(text).lower())


def is_dns_label(text: str) -> bool:
    """Whether ``text`` is a valid DNS-1123 label (namespaces, Job names)."""
    return len(text) <= 63 and bool(_DNS_LABEL.match(text))


def job_name_prefix(pipeline: str, step: str) -> str:
    """``generateName`` for a step's Job: ``<pipeline>-<step>-`` as a DNS-1123
    slug of at most 45 characters (``ferryman-`` when nothing usable is left)."""
    slug = _dns(f"{pipeline}-{step}")
    slug = _trim(slug, MAX_PREFIX - 1)
    return (slug or "ferryman") + "-"


def label_value(value: object) -> str:
    """Any value as a label value: ≤ 63 of ``[-A-Za-z0-9_.]``, alphanumeric at
    both ends, or empty. Unicode is transliterated (``é`` → ``e``)."""
    return _trim(_label_chars(str(value)), 63)


def label_key(key: str) -> str:
    """Any text as a label key: ``[prefix/]name``.

    The prefix (before the first ``/``) becomes a lower-case DNS subdomain of
    at most 253 characters; the name follows the value rules but may not be
    empty (``ValueError`` then).
    """
    prefix, sep, name = key.partition("/")
    if not sep:
        prefix, name = "", key
    clean_name = _trim(_label_chars(name), 63)
    if not clean_name:
        raise ValueError(f"label key {key!r} has no letters or digits in its name")
    if not prefix:
        return clean_name
    parts = [_trim(_dns(p), 63) for p in prefix.split(".")]
    clean_prefix = ".".join(p for p in parts if p)[:253].strip(".-")
    return f"{clean_prefix}/{clean_name}" if clean_prefix else clean_name


def is_label_key(key: str) -> bool:
    """Whether ``key`` is a valid label key (used by the tests' tables)."""
    prefix, sep, name = key.rpartition("/")
    if sep and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return False
    return len(name) <= 63 and bool(_LABEL_NAME.match(name))


def is_label_value(value: str) -> bool:
    """Whether ``value`` is a valid label value."""
    return value == "" or (len(value) <= 63 and bool(_LABEL_NAME.match(value)))


def make_labels(*layers: Mapping[str, object]) -> dict[str, str]:
    """Merge label layers (later wins) with keys and values made valid."""
    out: dict[str, str] = {}
    for layer in layers:
        for k, v in layer.items():
            out[label_key(str(k))] = label_value(v)
    return out


# -- base manifests and patches -------------------------------------------------


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

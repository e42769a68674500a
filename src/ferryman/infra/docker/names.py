"""Pure rules of the docker infrastructure: names, labels, volumes, pull policy.

No Docker daemon is needed for anything here, so every rule is table-tested
(``tests/unit/test_docker_rules.py``).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

PullPolicy = Literal["always", "if_not_present", "never"]

#: Docker's rule for container names.
NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
#: Longest container name ferryman generates (Docker has no hard limit, but
#: long names are unreadable in ``docker ps``).
MAX_NAME = 63
#: Prefix of ferryman's own labels (reverse-DNS, as Docker recommends).
LABEL_PREFIX = "io.ferryman."
_NAMED_VOLUME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")


def slugify_name(text: str, max_length: int = MAX_NAME) -> str:
    """Turn any text into a valid Docker container name.

    Accents are stripped (``café`` → ``cafe``), every run of characters outside
    ``[a-zA-Z0-9_.-]`` becomes one ``-``, leading characters that are not a
    letter or digit are dropped and the result is cut to ``max_length`` (no
    trailing separator). Text with nothing usable gives ``"ferryman"``.
    """
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-zA-Z0-9_.-]+", "-", ascii_text)
    slug = re.sub(r"-{2,}", "-", slug)
    slug = re.sub(r"^[^a-zA-Z0-9]+", "", slug)
    slug = slug[:max_length].rstrip("-_.")
    return slug or "ferryman"


def container_name(pipeline: str, step: str, run_id: str, attempt: int) -> str:
    """The base name of an attempt's container: ``pipeline-step-<run8>-<attempt>``.

    The run id and attempt are always kept whole; the pipeline and step parts
    are shortened when the name would be too long.
    """
    tail = f"-{slugify_name(run_id, 8)}-{attempt}"
    head = slugify_name(f"{pipeline}-{step}", MAX_NAME - len(tail))
    return head + tail


def numbered_name(base: str, n: int) -> str:
    """The ``n``-th name to try after conflicts: ``base``, ``base-2``, ``base-3``, …"""
    return base if n <= 0 else f"{base}-{n + 1}"


def label_key(key: str) -> str:
    """Convert a label key to Docker's reverse-DNS style.

    ``example.com/team`` (Kubernetes style, a DNS prefix and a name) becomes
    ``com.example.team``; a plain key stays as it is. Keys are lower-cased;
    characters other than letters, digits, ``.`` and ``-`` become ``-``; runs
    of separators collapse and the key starts and ends with a letter or digit.
    """
    prefix, sep, name = key.rpartition("/")
    if sep:
        parts = [p for p in prefix.split(".") if p]
        key = ".".join([*reversed(parts), name])
    key = key.lower()
    key = re.sub(r"[^a-z0-9.-]+", "-", key)
    key = re.sub(r"([.-])[.-]+", r"\1", key)
    key = key.strip(".-")
    if not key:
        raise ValueError("a label key must contain at least one letter or digit")
    return key


def docker_labels(user: dict[str, str], own: dict[str, str]) -> dict[str, str]:
    """User labels with converted keys, plus ferryman's own ``io.ferryman.*`` labels.

    Ferryman's labels win over a user label of the same converted key, so
    ``docker ps --filter label=io.ferryman.run-id=…`` can be trusted.
    """
    out = {label_key(k): str(v) for k, v in user.items()}
    out.update({LABEL_PREFIX + k: str(v) for k, v in own.items()})
    return out


@dataclass(frozen=True)
class Volume:
    """One parsed ``src:dst[:ro|rw]`` volume spec."""

    source: str
    target: str
    mode: str = "rw"


def parse_volume(spec: str) -> Volume:
    """Parse ``src:dst[:ro|rw]``; raise ``ValueError`` saying what is wrong.

    ``src`` is an absolute host path or the name of a Docker volume; ``dst``
    is an absolute path inside the container; the mode is ``rw`` (default)
    or ``ro``.
    """
    if not isinstance(spec, str):
        raise ValueError(f"volume {spec!r}: must be a string 'src:dst[:ro|rw]'")
    parts = spec.split(":")
    if len(parts) not in (2, 3):
        raise ValueError(f"volume {spec!r}: expected 'src:dst' or 'src:dst:ro|rw'")
    src, dst = parts[0], parts[1]
    mode = parts[2] if len(parts) == 3 else "rw"
    problems = []
    if not src:
        problems.append("the source is empty")
    elif not src.startswith("/") and not _NAMED_VOLUME.match(src):
        problems.append(
            f"the source {src!r} is neither an absolute host path nor a volume name "
            "(letters, digits, '_', '.', '-')"
        )
    if not dst.startswith("/"):
        problems.append(f"the target {dst!r} must be an absolute path in the container")
    if mode not in ("ro", "rw"):
        problems.append(f"the mode {mode!r} must be 'ro' or 'rw'")
    if problems:
        raise ValueError(f"volume {spec!r}: " + "; ".join(problems))
    return Volume(src, dst, mode)


def parse_volumes(specs: list[str]) -> list[Volume]:
    """Parse every spec; one ``ValueError`` listing every bad one."""
    out: list[Volume] = []
    problems: list[str] = []
    for s in specs:
        try:
            out.append(parse_volume(s))
        except ValueError as exc:
            problems.append(str(exc))
    targets = [v.target for v in out]
    for t in sorted({t for t in targets if targets.count(t) > 1}):
        problems.append(f"the target {t!r} is mounted twice")
    if problems:
        raise ValueError("invalid volumes: " + "; ".join(problems))
    return out


def split_image(image: str) -> tuple[str, str | None, str | None]:
    """``repo[:tag][@digest]`` → ``(repo, tag, digest)``.

    A ``:`` before the last ``/`` belongs to a registry host and port
    (``localhost:5000/app`` has no tag).
    """
    name, _, digest = image.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon + 1 :], digest or None
    return name, None, digest or None


def pull_policy(image: str, configured: PullPolicy | None) -> PullPolicy:
    """The effective pull policy of ``image``.

    An explicit policy wins. Otherwise the usual rule: an image without a tag
    or tagged ``latest`` is pulled ``always`` (it may have moved); a pinned
    tag or a digest is pulled ``if_not_present``.
    """
    if configured is not None:
        return configured
    _, tag, digest = split_image(image)
    if digest:
        return "if_not_present"
    if tag is None or tag == "latest":
        return "always"
    return "if_not_present"


_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "m": 1000**2,
    "g": 1000**3,
    "t": 1000**4,
    "ki": 1024,
    "mi": 1024**2,
    "gi": 1024**3,
    "ti": 1024**4,
}


def memory_bytes(value: str | int) -> int:
    """``"512Mi"``, ``"1G"``, ``"256m"`` (Docker style, 1024-based) or bytes → bytes.

    Kubernetes suffixes (``Ki Mi Gi Ti`` 1024-based, ``k M G T`` 1000-based)
    and Docker suffixes (``b k m g``, lower-case, 1024-based) are accepted.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        if value <= 0:
            raise ValueError(f"memory {value!r} must be positive")
        return value
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]{0,2})\s*", str(value))
    if not m:
        raise ValueError(f"memory {value!r}: expected a number with an optional unit, e.g. 512Mi")
    number, unit = float(m.group(1)), m.group(2)
    if unit in ("k", "m", "g", "t"):  # Docker's lower-case units are binary
        factor = 1024 ** ("kmgt".index(unit) + 1)
    elif unit.lower() in _UNITS and (unit == "" or unit[0].isupper() or unit == "b"):
        factor = _UNITS[unit.lower()]
    else:
        raise ValueError(f"memory {value!r}: unknown unit {unit!r} (use Ki, Mi, Gi, k, m, g, …)")
    result = int(number * factor)
    if result <= 0:
        raise ValueError(f"memory {value!r} must be positive")
    return result


def cpu_count(value: str | float) -> float:
    """``"500m"`` → 0.5, ``"2"`` → 2.0, ``1.5`` → 1.5 (Kubernetes CPU notation)."""
    text = str(value).strip()
    try:
        cpus = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    except ValueError:
        raise ValueError(f"cpu {value!r}: expected a number of CPUs, e.g. 0.5 or 500m") from None
    if cpus <= 0:
        raise ValueError(f"cpu {value!r} must be positive")
    return cpus

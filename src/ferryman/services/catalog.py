"""The pipeline catalog: registered pipelines, their versions and their triggers.

Every distinct definition of a pipeline is stored as a version (its spec's
content hash). Registering also makes the newest version's event triggers the
pipeline's active ones (``pipeline_triggers``); firing them is
``services/triggers.py``'s business.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ferryman.domain.spec import PipelineSpec
from ferryman.errors import InvalidInput, NotFound
from ferryman.store.tables import pipeline_triggers, pipeline_versions, pipelines, utcnow


@dataclass(frozen=True)
class PipelineVersion:
    """A stored version of a pipeline."""

    id: int
    namespace: str
    name: str
    version: str
    spec: PipelineSpec
    created: bool = False
    warnings: tuple[str, ...] = ()  # e.g. a trigger on a pipeline not registered yet


def _insert_ignore(conn: Connection, table: sa.Table, values: dict[str, Any]) -> None:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        conn.execute(pg_insert(table).values(**values).on_conflict_do_nothing())
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        conn.execute(sqlite_insert(table).values(**values).on_conflict_do_nothing())


def register(conn: Connection, namespace: str, spec: PipelineSpec) -> PipelineVersion:
    """Store ``spec`` under ``namespace``; a new version only when it changed.

    The triggers of the newest version become the pipeline's active triggers;
    a trigger reading a parameter or step its (registered) source lacks is an
    ``InvalidInput`` error and nothing is stored.
    """
    warnings = _check_trigger_sources(conn, namespace, spec) if spec.triggers else []
    now = utcnow()
    _insert_ignore(
        conn,
        pipelines,
        {"namespace": namespace, "name": spec.name, "created_at": now, "updated_at": now},
    )
    pid = conn.execute(
        sa.select(pipelines.c.id).where(
            pipelines.c.namespace == namespace, pipelines.c.name == spec.name
        )
    ).scalar_one()
    version = spec.version
    existing = conn.execute(
        sa.select(pipeline_versions.c.id).where(
            pipeline_versions.c.pipeline_id == pid, pipeline_versions.c.version == version
        )
    ).scalar()
    created = False
    if existing is None:
        _insert_ignore(
            conn,
            pipeline_versions,
            {
                "pipeline_id": pid,
                "version": version,
                "spec": spec.model_dump(mode="json"),
                "created_at": now,
            },
        )
        existing = conn.execute(
            sa.select(pipeline_versions.c.id).where(
                pipeline_versions.c.pipeline_id == pid, pipeline_versions.c.version == version
            )
        ).scalar_one()
        conn.execute(sa.update(pipelines).where(pipelines.c.id == pid).values(updated_at=now))
        created = True
    newest = conn.execute(
        sa.select(sa.func.max(pipeline_versions.c.id)).where(pipeline_versions.c.pipeline_id == pid)
    ).scalar()
    if newest == existing:  # re-registering an older version does not change what runs
        _sync_triggers(conn, namespace, spec)
    _SPEC_CACHE[existing] = spec
    return PipelineVersion(existing, namespace, spec.name, version, spec, created, tuple(warnings))


_SPEC_CACHE: dict[int, PipelineSpec] = {}


def spec_of_version(conn: Connection, version_id: int) -> PipelineSpec:
    """The spec of a stored version (parsed once per process)."""
    spec = _SPEC_CACHE.get(version_id)
    if spec is None:
        raw = conn.execute(
            sa.select(pipeline_versions.c.spec).where(pipeline_versions.c.id == version_id)
        ).scalar_one()
        spec = PipelineSpec.model_validate(raw)
        _SPEC_CACHE[version_id] = spec
    return spec


def latest(conn: Connection, namespace: str, name: str) -> PipelineVersion:
    """The newest version of a registered pipeline."""
    row = conn.execute(
        sa.select(pipeline_versions.c.id, pipeline_versions.c.version)
        .join(pipelines, pipelines.c.id == pipeline_versions.c.pipeline_id)
        .where(pipelines.c.namespace == namespace, pipelines.c.name == name)
        .order_by(pipeline_versions.c.id.desc())
        .limit(1)
    ).first()
    if row is None:
        known = list_names(conn, namespace)
        hint = f" (pipelines in {namespace!r}: {', '.join(known)})" if 0 < len(known) <= 20 else ""
        raise NotFound(f"no pipeline {name!r} in namespace {namespace!r}{hint}")
    return PipelineVersion(row.id, namespace, name, row.version, spec_of_version(conn, row.id))


def normalised_name(name: str) -> str:
    """A pipeline name as the replaced API compared them: lower case, ``-`` as ``_``."""
    return name.strip().lower().replace("-", "_")


def resolve_name(conn: Connection, namespace: str, name: str) -> str:
    """The registered pipeline ``name`` means: itself when registered, else the
    one whose normalised name (``normalised_name``) is the same.

    ``NotFound`` names the closest pipelines when there is none (or when
    several differ only in case or ``-``/``_``, the exact name is needed).
    """
    known = list_names(conn, namespace)
    if name in known:
        return name
    wanted = normalised_name(name)
    same = [k for k in known if normalised_name(k) == wanted]
    if len(same) == 1:
        return same[0]
    if same:
        raise NotFound(f"{name!r} could be any of {', '.join(same)} in {namespace!r}: use one")
    close = difflib.get_close_matches(wanted, [normalised_name(k) for k in known], n=3, cutoff=0.5)
    by_norm = {normalised_name(k): k for k in known}
    hint = f"; did you mean {', '.join(by_norm[c] for c in close)}?" if close else ""
    if not close and 0 < len(known) <= 20:
        hint = f" (pipelines in {namespace!r}: {', '.join(known)})"
    raise NotFound(f"no pipeline {name!r} in namespace {namespace!r}{hint}")


def list_names(conn: Connection, namespace: str) -> list[str]:
    return list(
        conn.execute(
            sa.select(pipelines.c.name)
            .where(pipelines.c.namespace == namespace)
            .order_by(pipelines.c.name)
        ).scalars()
    )


def list_pipelines(conn: Connection, namespace: str | None = None) -> list[dict[str, Any]]:
    """Every pipeline with its newest version and version count."""
    pv = pipeline_versions
    q = (
        sa.select(
            pipelines.c.namespace,
            pipelines.c.name,
            pipelines.c.updated_at,
            sa.func.count(pv.c.id).label("versions"),
            sa.func.max(pv.c.id).label("latest_id"),
        )
        .join(pv, pv.c.pipeline_id == pipelines.c.id)
        .group_by(pipelines.c.id)
        .order_by(pipelines.c.namespace, pipelines.c.name)
    )
    if namespace:
        q = q.where(pipelines.c.namespace == namespace)
    out = []
    for r in conn.execute(q):
        version = conn.execute(sa.select(pv.c.version).where(pv.c.id == r.latest_id)).scalar_one()
        out.append(
            {
                "namespace": r.namespace,
                "name": r.name,
                "latest_version": version,
                "versions": r.versions,
                "updated_at": r.updated_at,
            }
        )
    return out


# -- event triggers, as registered ----------------------------------------------


def _latest_spec(conn: Connection, namespace: str, name: str) -> PipelineSpec | None:
    vid = conn.execute(
        sa.select(sa.func.max(pipeline_versions.c.id))
        .join(pipelines, pipelines.c.id == pipeline_versions.c.pipeline_id)
        .where(pipelines.c.namespace == namespace, pipelines.c.name == name)
    ).scalar()
    return None if vid is None else spec_of_version(conn, vid)


def _check_trigger_sources(conn: Connection, namespace: str, spec: PipelineSpec) -> list[str]:
    """Check ``spec``'s triggers against the registered triggering pipelines.

    Raises ``InvalidInput`` listing every trigger that reads a parameter or
    step its (registered) source does not have. Returns warnings for sources
    that are not registered yet: those are checked when the trigger fires.
    """
    problems: list[str] = []
    details: list[dict[str, str]] = []
    warnings: list[str] = []
    for i, t in enumerate(spec.triggers):
        ns, name = t.source(namespace)
        where = f"trigger {i} of {spec.name!r} (on {ns}/{name})"
        src = _latest_spec(conn, ns, name)
        if src is None:
            warnings.append(
                f"{where}: pipeline {name!r} is not registered in namespace {ns!r} yet; "
                "the mapping is checked when the trigger fires"
            )
            continue
        params, steps = t.referenced()
        known_p = {p.name for p in src.params}
        known_s = {s.name for s in src.steps}
        reasons = [
            f"{name!r} has no parameter {p!r} (params: {', '.join(sorted(known_p)) or 'none'})"
            for p in sorted(params - known_p)
        ] + [
            f"{name!r} has no step {s!r} (steps: {', '.join(sorted(known_s))})"
            for s in sorted(steps - known_s)
        ]
        problems.extend(f"{where}: {r}" for r in reasons)
        details.extend({"path": f"triggers[{i}].params", "reason": r} for r in reasons)
    if problems:
        raise InvalidInput(
            f"invalid trigger(s) in pipeline {spec.name!r}: " + "; ".join(problems), details
        )
    return warnings


def _sync_triggers(conn: Connection, namespace: str, spec: PipelineSpec) -> None:
    """Make ``spec``'s triggers the active ones of ``(namespace, spec.name)``."""
    conn.execute(
        sa.delete(pipeline_triggers).where(
            pipeline_triggers.c.target_namespace == namespace,
            pipeline_triggers.c.target_pipeline == spec.name,
        )
    )
    now = utcnow()
    rows = [
        {
            "target_namespace": namespace,
            "target_pipeline": spec.name,
            "position": i,
            "source_namespace": ns,
            "source_pipeline": name,
            "state": state,
            "spec": t.model_dump(mode="json"),
            "created_at": now,
        }
        for i, t in enumerate(spec.triggers)
        for ns, name in [t.source(namespace)]
        for state in t.states
    ]
    if rows:
        conn.execute(sa.insert(pipeline_triggers), rows)

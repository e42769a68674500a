"""Pipeline registration: every distinct definition is stored as a version."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ferryman.domain.spec import PipelineSpec
from ferryman.errors import NotFound
from ferryman.services import triggers
from ferryman.store.tables import pipeline_versions, pipelines, utcnow


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
    warnings = triggers.check_sources(conn, namespace, spec) if spec.triggers else []
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
        triggers.sync(conn, namespace, spec)
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

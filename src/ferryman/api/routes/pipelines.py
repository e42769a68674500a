"""Pipelines: register versions, list them, show parameters and steps."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel

from ferryman.api.deps import Developer, SettingsDep, StoreDep, Viewer
from ferryman.api.schemas import (
    PipelineDetail,
    PipelineList,
    PipelinePublic,
    PipelineRegistered,
    VersionList,
    VersionPublic,
)
from ferryman.domain.params import json_schema
from ferryman.domain.spec import NAME_RE, PipelineSpec
from ferryman.errors import InvalidInput, TooLarge
from ferryman.services import queries, triggers
from ferryman.services.catalog import list_pipelines, register
from ferryman.services.schedules import reconcile as reconcile_schedules
from ferryman.store.engine import SCHEDULE_CHANNEL

router = APIRouter(tags=["pipelines"])

NAME_PATTERN = NAME_RE.pattern
NAME_HELP = "letters, digits, '_', '-' or '.', starting with a letter or digit (at most 128)"

#: A namespace in a path: validated like a pipeline name.
Namespace = Annotated[str, Path(pattern=NAME_PATTERN, description=f"Namespace: {NAME_HELP}")]
#: A pipeline name in a path.
PipelineName = Annotated[str, Path(pattern=NAME_PATTERN, description=f"Pipeline: {NAME_HELP}")]


_SCHEMAS: dict[str, dict[str, Any]] = {}


def _params_schema(version: str, spec: PipelineSpec) -> dict[str, Any]:
    # Keyed by the version, a hash of the whole definition: each definition's
    # JSON Schema is built once per process.
    schema = _SCHEMAS.get(version)
    if schema is None:
        if len(_SCHEMAS) >= 1024:
            _SCHEMAS.clear()
        schema = _SCHEMAS[version] = json_schema(spec)
    return schema


def respond(model: BaseModel, status_code: int = 200) -> Response:
    """``model`` as a JSON response. Routes return these: FastAPI would
    otherwise validate the returned model a second time, in another trip
    through its thread pool."""
    return Response(model.model_dump_json(), status_code, media_type="application/json")


def nul_paths(value: Any, path: str = "") -> list[str]:
    """Where in a JSON value a string holds a NUL character (PostgreSQL cannot
    store one in text or JSON, so such input is refused up front)."""
    if isinstance(value, str):
        return [path] if "\x00" in value else []
    if isinstance(value, dict):
        found = []
        for k, v in value.items():
            sub = f"{path}.{k}" if path else str(k)
            found += [sub] if "\x00" in str(k) else nul_paths(v, sub)
        return found
    if isinstance(value, list):
        return [
            p for i, v in enumerate(value) for p in nul_paths(v, f"{path}.{i}" if path else str(i))
        ]
    return []


def _check_validators(spec: PipelineSpec) -> None:
    from ferryman.domain.validators import check_validator_spec

    problems = []
    for i, v in enumerate(spec.validators):
        try:
            check_validator_spec(v)
        except ValueError as exc:
            problems.append({"path": f"validators.{i}", "reason": str(exc)})
    if problems:
        raise InvalidInput(f"{len(problems)} invalid validator(s)", problems)


def _check_reserved_env(spec: PipelineSpec) -> None:
    # FERRYMAN_* is ferryman's: a step never gets such a variable but its own
    # (they would be dropped at launch; refusing them says so up front).
    from ferryman.domain.secret_names import secret_name_problem
    from ferryman.infra.base import RESERVED_PREFIX

    problems = [
        {"path": f"steps.{i}.{field}", "reason": f"{name}: {RESERVED_PREFIX}* names are reserved"}
        for i, s in enumerate(spec.steps)
        for field, names in (("env", list(s.env)), ("secrets", s.secrets))
        for name in names
        if name.startswith(RESERVED_PREFIX)
    ]
    # A secret name must also be a variable name (it is delivered as one).
    problems += [
        {"path": f"steps.{i}.secrets", "reason": why}
        for i, s in enumerate(spec.steps)
        for name in s.secrets
        if not name.upper().startswith(RESERVED_PREFIX)
        and (why := secret_name_problem(name)) is not None
    ]
    if problems:
        raise InvalidInput(f"{len(problems)} reserved variable name(s)", problems)


def check_size(what: str, value: Any, limit: int, setting: str) -> int:
    """The size of ``value`` as compact JSON; ``TooLarge`` (413) past ``limit``
    bytes, naming the limit and the setting that raises it."""
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    if size > limit:
        raise TooLarge(
            f"{what} is {size} bytes as JSON; the limit is {limit} bytes ({setting})",
            [{"path": what, "reason": f"larger than {limit} bytes"}],
        )
    return size


def _check_step_kinds(spec: PipelineSpec) -> None:
    from ferryman.infra.registry import kind_problems

    problems = [{"path": f"steps.{i}", "reason": why} for i, why in kind_problems(spec)]
    if problems:
        raise InvalidInput(f"{len(problems)} step(s) cannot run on their infrastructure", problems)


@router.post(
    "/namespaces/{ns}/pipelines",
    response_model=PipelineRegistered,
    status_code=201,
    summary="Register a pipeline (developers and admins; a new version only when it changed)",
    responses={
        200: {"description": "This definition was already registered", "model": PipelineRegistered},
        403: {"description": "Only developers and admins register pipeline code"},
        413: {"description": "The definition is larger than FERRYMAN_MAX_SPEC_BYTES"},
    },
)
def register_pipeline(
    ns: Namespace, spec: PipelineSpec, store: StoreDep, settings: SettingsDep, _: Developer
) -> Response:
    """Store the compiled pipeline spec; 201 with the new version, or 200 when
    the same definition is already stored.

    Developers and admins only: a pipeline is code the workers run."""
    document = spec.model_dump(mode="json")
    check_size("spec", document, settings.api.max_spec_bytes, "FERRYMAN_MAX_SPEC_BYTES")
    bad = nul_paths(document)
    if bad:
        details = [{"path": p, "reason": "contains a NUL character"} for p in bad]
        raise InvalidInput("NUL characters are not allowed", details)
    _check_validators(spec)
    _check_reserved_env(spec)
    _check_step_kinds(spec)
    with store.write() as conn:
        pv = register(conn, ns, spec)
        # the schedules the pipeline declares, by name (docs/schedules.md)
        if any(reconcile_schedules(conn, ns, spec.name, spec.schedules).values()):
            store.notify(conn, SCHEDULE_CHANNEL)
    out = PipelineRegistered(
        namespace=ns,
        name=pv.name,
        version=pv.version,
        created=pv.created,
        warnings=list(pv.warnings),
    )
    return respond(out, 201 if pv.created else 200)


@router.get("/pipelines", response_model=PipelineList, summary="Pipelines of every namespace")
def get_all_pipelines(
    store: StoreDep,
    _: Viewer,
    namespace: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
) -> Response:
    """Every pipeline with its newest version, by namespace and name (one
    namespace with ``namespace``)."""
    with store.read() as conn:
        rows = list_pipelines(conn, namespace)
    return respond(PipelineList(items=[PipelinePublic.model_validate(r) for r in rows]))


@router.get(
    "/namespaces/{ns}/pipelines", response_model=PipelineList, summary="Pipelines of a namespace"
)
def get_pipelines(ns: Namespace, store: StoreDep, _: Viewer) -> Response:
    """Every pipeline of the namespace with its newest version, by name."""
    with store.read() as conn:
        rows = list_pipelines(conn, ns)
    return respond(PipelineList(items=[PipelinePublic.model_validate(r) for r in rows]))


@router.get(
    "/namespaces/{ns}/pipelines/{name}",
    response_model=PipelineDetail,
    summary="A pipeline: parameters (JSON Schema) and steps",
)
def get_pipeline(
    ns: Namespace,
    name: PipelineName,
    store: StoreDep,
    _: Viewer,
    version: Annotated[
        str | None, Query(max_length=64, description="A stored version (default: the newest)")
    ] = None,
) -> Response:
    """The newest version of the pipeline (or ``version``)."""
    with store.read() as conn:
        pv, created_at = queries.pipeline_version(conn, ns, name, version)
    spec = pv.spec
    detail = PipelineDetail.of(
        ns,
        pv.version,
        created_at,
        spec,
        params_schema=_params_schema(pv.version, spec),
        triggers=triggers.triggers_of(ns, spec),
    )
    return respond(detail)


@router.get(
    "/namespaces/{ns}/pipelines/{name}/versions",
    response_model=VersionList,
    summary="Versions of a pipeline, newest first",
)
def get_versions(ns: Namespace, name: PipelineName, store: StoreDep, _: Viewer) -> Response:
    """Every stored version of the pipeline, newest first."""
    with store.read() as conn:
        rows = queries.list_versions(conn, ns, name)
    return respond(VersionList(items=[VersionPublic.model_validate(r) for r in rows]))

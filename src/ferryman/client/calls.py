"""The request of every pipeline and run operation, built once and sent by
either client (``Client`` sends it with httpx's sync client, ``AsyncClient``
with its async one), and how an answer is parsed."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from pydantic import BaseModel, TypeAdapter

from ferryman.api.schemas import (
    CompatRunCreated,
    EventList,
    LogList,
    PipelineDetail,
    PipelineList,
    PipelineRegistered,
    RunCounts,
    RunCreate,
    RunCreated,
    RunDetail,
    RunList,
    RunOutputs,
    RunPublic,
    VersionList,
)
from ferryman.domain.spec import PipelineSpec
from ferryman.domain.states import RunState

T = TypeVar("T")

#: Query parameters, in order (a name may repeat: ``?state=a&state=b``).
Params = list[tuple[str, str | int | float | bool | None]]


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request and the type of its answer."""

    method: str
    path: str
    model: Any  # a pydantic model class, a type such as list[Model], or None (no body)
    params: Params = field(default_factory=list)
    json: Any = None
    data: dict[str, str] | None = None
    headers: dict[str, str] = field(default_factory=dict)


_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def parse(call: Call[T], content: bytes) -> T:
    """The response body as ``call.model`` (a model class or e.g. ``list[Model]``)."""
    model = call.model
    if model is None:
        return None  # type: ignore[return-value]
    if isinstance(model, type) and issubclass(model, BaseModel):
        return model.model_validate_json(content)  # type: ignore[return-value]
    adapter = _ADAPTERS.get(model)
    if adapter is None:
        adapter = _ADAPTERS[model] = TypeAdapter(model)
    result: T = adapter.validate_json(content)
    return result


def query(**kwargs: Any) -> Params:
    """Query parameters from keyword arguments: ``None`` is left out, a list
    or tuple repeats the name."""
    out: Params = []
    for k, v in kwargs.items():
        if v is None:
            continue
        if isinstance(v, (list, tuple)):
            out.extend((k, x) for x in v)
        else:
            out.append((k, v))
    return out


def segment(value: str) -> str:
    """``value`` quoted as one path segment (a ``/`` in it is escaped too)."""
    return quote(value, safe="")


def timestamp(value: dt.datetime | None) -> str | None:
    """An ISO 8601 time; a naive ``value`` is taken as UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.isoformat()


def spec_json(spec: PipelineSpec | Mapping[str, Any] | str) -> Any:
    """The JSON of a pipeline: a spec, its JSON already, the text of a YAML
    (or JSON) pipeline (it has a line break, or starts with ``{``), or a
    reference such as ``path/to/file.py:name`` compiled here."""
    if isinstance(spec, str):
        # The DSL loaders are needed only for text and references; importing
        # them lazily keeps ``import ferryman.client`` light.
        if "\n" in spec.strip() or spec.lstrip().startswith("{"):
            from ferryman.dsl.yaml_loader import load_pipeline_text

            spec = load_pipeline_text(spec)
        else:
            from ferryman.dsl.loader import load_pipeline

            spec = load_pipeline(spec)
    if isinstance(spec, PipelineSpec):
        return spec.model_dump(mode="json")
    return dict(spec)


def label_filters(labels: Mapping[str, str] | Iterable[str] | None) -> list[str] | None:
    """``?label=key:value`` filters from a mapping or ready-made ``key:value`` strings."""
    if labels is None:
        return None
    if isinstance(labels, Mapping):
        return [f"{k}:{v}" for k, v in labels.items()]
    return list(labels)


def run_create(
    params: Mapping[str, Any] | None,
    labels: Mapping[str, str] | None,
    webhook_url: str | None,
    slack_channel: str | None,
    slack_thread: str | None,
    timeout: float | None,
) -> RunCreate:
    """The body of a create-run request, validated before anything is sent."""
    return RunCreate.model_validate(
        {
            "params": dict(params or {}),
            "labels": dict(labels or {}),
            "webhook_url": webhook_url,
            "slack_channel": slack_channel,
            "slack_thread": slack_thread,
            "timeout": timeout,
        }
    )


def _key_header(idempotency_key: str | None) -> dict[str, str]:
    return {"Idempotency-Key": idempotency_key} if idempotency_key else {}


class Calls:
    """The requests of authentication, pipelines and runs."""

    @staticmethod
    def login(username: str, password: str) -> Call[dict[str, Any]]:
        return Call(
            "POST", "/token", dict[str, Any], data={"username": username, "password": password}
        )

    @staticmethod
    def get_json(path: str) -> Call[dict[str, Any]]:
        return Call("GET", path, dict[str, Any])

    @staticmethod
    def register_pipeline(
        namespace: str, spec: PipelineSpec | Mapping[str, Any] | str
    ) -> Call[PipelineRegistered]:
        return Call(
            "POST",
            f"/namespaces/{segment(namespace)}/pipelines",
            PipelineRegistered,
            json=spec_json(spec),
        )

    @staticmethod
    def list_pipelines(namespace: str | None) -> Call[PipelineList]:
        if namespace is None:
            return Call("GET", "/pipelines", PipelineList)
        return Call("GET", f"/namespaces/{segment(namespace)}/pipelines", PipelineList)

    @staticmethod
    def get_pipeline(namespace: str, name: str, version: str | None) -> Call[PipelineDetail]:
        return Call(
            "GET",
            f"/namespaces/{segment(namespace)}/pipelines/{segment(name)}",
            PipelineDetail,
            params=query(version=version),
        )

    @staticmethod
    def list_versions(namespace: str, name: str) -> Call[VersionList]:
        return Call(
            "GET",
            f"/namespaces/{segment(namespace)}/pipelines/{segment(name)}/versions",
            VersionList,
        )

    @staticmethod
    def create_run(
        namespace: str, pipeline: str, body: RunCreate, idempotency_key: str | None
    ) -> Call[RunCreated]:
        return Call(
            "POST",
            f"/namespaces/{segment(namespace)}/pipelines/{segment(pipeline)}/runs",
            RunCreated,
            json=body.model_dump(mode="json", exclude_none=True),
            headers=_key_header(idempotency_key),
        )

    @staticmethod
    def create_run_compat(
        namespace: str,
        pipeline: str,
        params: Mapping[str, Any] | None,
        webhook_uri: str | None,
        idempotency_key: str | None,
    ) -> Call[CompatRunCreated]:
        body = dict(params or {})
        if webhook_uri is not None:
            body["webhook_uri"] = webhook_uri
        return Call(
            "POST",
            f"/{segment(namespace)}/pipelines/run/{segment(pipeline)}/",
            CompatRunCreated,
            json=body,
            headers=_key_header(idempotency_key),
        )

    @staticmethod
    def list_runs(
        namespace: str | None,
        pipeline: str | None,
        state: RunState | str | Iterable[RunState | str] | None,
        labels: Mapping[str, str] | Iterable[str] | None,
        created_after: dt.datetime | None,
        created_before: dt.datetime | None,
        limit: int,
        cursor: str | None,
        include_params: bool = False,
    ) -> Call[RunList]:
        states = [state] if isinstance(state, str) else (list(state) if state else None)
        return Call(
            "GET",
            "/runs",
            RunList,
            params=query(
                namespace=namespace,
                pipeline=pipeline,
                state=[str(s) for s in states] if states else None,
                label=label_filters(labels),
                created_after=timestamp(created_after),
                created_before=timestamp(created_before),
                limit=limit,
                cursor=cursor,
                include_params="true" if include_params else None,
            ),
        )

    @staticmethod
    def count_runs(
        namespace: str | None, pipeline: str | None, labels: Mapping[str, str] | None
    ) -> Call[RunCounts]:
        return Call(
            "GET",
            "/runs/counts",
            RunCounts,
            params=query(namespace=namespace, pipeline=pipeline, label=label_filters(labels)),
        )

    @staticmethod
    def get_run(run_id: str) -> Call[RunDetail]:
        return Call("GET", f"/runs/{segment(run_id)}", RunDetail)

    @staticmethod
    def cancel_run(run_id: str) -> Call[RunPublic]:
        return Call("POST", f"/runs/{segment(run_id)}/cancel", RunPublic)

    @staticmethod
    def rerun(run_id: str) -> Call[RunCreated]:
        return Call("POST", f"/runs/{segment(run_id)}/rerun", RunCreated)

    @staticmethod
    def outputs(run_id: str, step: str | None = None) -> Call[RunOutputs]:
        return Call("GET", f"/runs/{segment(run_id)}/outputs", RunOutputs, params=query(step=step))

    @staticmethod
    def logs(
        run_id: str,
        step: str | None,
        after: int,
        limit: int,
        tail: int | None,
        attempt: int | None = None,
    ) -> Call[LogList]:
        return Call(
            "GET",
            f"/runs/{segment(run_id)}/logs",
            LogList,
            params=query(step=step, attempt=attempt, after=after, limit=limit, tail=tail),
        )

    @staticmethod
    def events(run_id: str, after: int, limit: int) -> Call[EventList]:
        return Call(
            "GET",
            f"/runs/{segment(run_id)}/events",
            EventList,
            params=query(after=after, limit=limit),
        )

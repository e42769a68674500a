"""Request and response models of the REST API, shared with the Python client.

Families follow ``XCreate`` (what a client sends), ``XPublic`` (what the API
returns for one X) and ``XList`` (a page of them). This module depends on
pydantic and the domain only, so ``ferryman.client`` can use it without
pulling in the server.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    StringConstraints,
    field_validator,
    model_validator,
)

from ferryman.domain.options import RunOptions
from ferryman.domain.spec import ParamSpec, PipelineSpec
from ferryman.domain.states import NodeState, RunState

#: Label keys: what ``GET /runs?label=key:value`` can filter on.
LABEL_KEY_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_./-]{0,127}$"
LabelKey = Annotated[str, StringConstraints(pattern=LABEL_KEY_PATTERN)]
LabelValue = Annotated[str, StringConstraints(max_length=256)]

MAX_RUN_TIMEOUT = 30 * 24 * 3600.0


class _Out(BaseModel):
    model_config = ConfigDict(extra="ignore")


# -- runs ----------------------------------------------------------------------------


class RunCreate(BaseModel):
    """Start a run: its parameters and what to do when it ends."""

    model_config = ConfigDict(extra="forbid")

    params: dict[str, Any] = Field(
        default_factory=dict, description="The pipeline's parameters (validated on the server)"
    )
    webhook_url: HttpUrl | None = Field(
        default=None, description="POSTed a summary when the run ends (retried, durable)"
    )
    slack_channel: str | None = Field(
        default=None, min_length=1, max_length=128, description="Slack channel told at the end"
    )
    slack_thread: str | None = Field(
        default=None, min_length=1, max_length=64, description="Thread (ts) in slack_channel"
    )
    labels: dict[LabelKey, LabelValue] = Field(
        default_factory=dict, max_length=64, description="Free-form labels to filter runs on"
    )
    timeout: float | None = Field(
        default=None, gt=0, le=MAX_RUN_TIMEOUT, description="Run timeout in seconds"
    )

    @field_validator("labels", "slack_channel", "slack_thread")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        # PostgreSQL cannot store NUL characters in text or JSON.
        texts = [*value.keys(), *value.values()] if isinstance(value, dict) else [value]
        if any(isinstance(t, str) and "\x00" in t for t in texts):
            raise ValueError("NUL characters are not allowed")
        return value

    @model_validator(mode="after")
    def _thread_needs_channel(self) -> RunCreate:
        if self.slack_thread and not self.slack_channel:
            raise ValueError("slack_thread needs slack_channel")
        return self

    def options(self) -> RunOptions:
        """The run options stored with the run (only those that were given)."""
        given = self.model_dump(mode="json", include=_OPTION_FIELDS, exclude_none=True)
        return RunOptions.model_validate(given)


_OPTION_FIELDS = {"webhook_url", "slack_channel", "slack_thread", "timeout"}


class RunPublic(_Out):
    """A run (without its steps)."""

    id: str = Field(description="32 hex digits, time-ordered")
    name: str = Field(
        description="A short readable handle, unique in the namespace (e.g. brave-otter-42); "
        "usable wherever a run id is"
    )
    namespace: str
    pipeline: str
    version: str = Field(description="The pipeline version the run uses")
    state: RunState
    params: dict[str, Any] | None = Field(
        default=None,
        description="The run's parameters (in a list of runs only with ?include_params=true)",
    )
    labels: dict[str, str]
    nodes_total: int
    nodes_remaining: int = Field(description="Steps not yet in a final state")
    failed_node: str | None = None
    error: str | None = None
    rerun_of: str | None = None
    trigger: dict[str, Any] | None = None
    cancel_requested: bool = False
    created_at: dt.datetime
    started_at: dt.datetime | None = None
    ended_at: dt.datetime | None = None
    duration: float | None = Field(default=None, description="Seconds (so far, if running)")
    timeout: float | None = Field(default=None, description="Run timeout in seconds")
    has_webhook: bool = Field(default=False, description="A webhook_url is notified at the end")
    slack_channel: str | None = None
    slack_thread: str | None = None
    url: str = Field(description="The run's page in the web UI")

    @classmethod
    def from_row(cls, row: dict[str, Any], base_url: str) -> RunPublic:
        """Build from a ``services.queries.run_dict``."""
        return cls.model_validate(_run_fields(row, base_url))


def _run_fields(row: dict[str, Any], base_url: str) -> dict[str, Any]:
    opts = RunOptions.from_stored(row.get("options"))
    return {
        **row,
        "labels": {str(k): str(v) for k, v in (row.get("labels") or {}).items()},
        "timeout": opts.timeout,
        "has_webhook": bool(opts.webhook_url),
        "slack_channel": opts.slack_channel,
        "slack_thread": opts.slack_thread,
        "url": f"{base_url}/runs/{row['id']}",
    }


class RunCreated(RunPublic):
    """The answer to a create: the run, and whether this request created it
    (``False`` when the idempotency key had been seen: the earlier run)."""

    created: bool

    @classmethod
    def of(cls, row: dict[str, Any], base_url: str, created: bool) -> RunCreated:
        """Build from a ``services.queries.run_dict``."""
        return cls.model_validate({**_run_fields(row, base_url), "created": created})


class CompatRun(_Out):
    """The ``response`` of the compatibility route's answer."""

    message: str
    name: str
    run_id: str
    run_url: str
    error_logs: str = ""


class CompatRunCreated(_Out):
    """The compatibility route's answer: the replaced API's shape,
    ``{"status": "ok", "response": {...}}``."""

    status: str
    response: CompatRun

    @property
    def id(self) -> str:
        """The run's id (``response.run_id``)."""
        return self.response.run_id


class CompatMessage(_Out):
    """The ``response`` of the compatibility route's errors."""

    message: str


class CompatErrorBody(_Out):
    """The compatibility route's 400: ``{"status": "error", "response": {"message"}}``."""

    status: str
    response: CompatMessage


class CompatDetail(_Out):
    """The compatibility route's 401/403: ``{"detail": ...}``, as the replaced API."""

    detail: str


class NodePublic(_Out):
    """One step of a run."""

    name: str
    state: NodeState
    attempt: int = Field(description="The current (or last) attempt, from 1; 0 = not started")
    max_attempts: int
    worker_id: str | None = None
    infra_kind: str | None = None
    infra_id: str | None = None
    error: str | None = None
    exit_code: int | None = None
    reused: bool = Field(default=False, description="Output re-used from the run re-run")
    has_output: bool = False
    started_at: dt.datetime | None = None
    ended_at: dt.datetime | None = None
    duration: float | None = None
    message: str | None = Field(
        default=None, description="What the running step waits for (a plugin's quota)"
    )


class TriggerFiringPublic(_Out):
    """What one event trigger did when this run ended."""

    namespace: str = Field(description="Namespace of the triggered pipeline")
    pipeline: str = Field(description="The triggered pipeline")
    state: str = Field(description="The final state of this run that fired it")
    event_id: str = Field(description="Id of that state's event")
    run_id: str | None = Field(default=None, description="The run it started (none: see error)")
    error: str | None = Field(default=None, description="Why it started no run")
    time: dt.datetime


class RunDetail(RunPublic):
    """A run with its steps."""

    nodes: list[NodePublic]
    triggered: list[TriggerFiringPublic] = Field(
        default_factory=list, description="Runs that event triggers started when this run ended"
    )

    @classmethod
    def from_row(cls, row: dict[str, Any], base_url: str) -> RunDetail:
        """Build from ``services.queries.get_run`` (with nodes)."""
        return cls.model_validate(_run_fields(row, base_url))


class RunList(_Out):
    """A page of runs, newest first."""

    items: list[RunPublic]
    next_cursor: str | None = Field(
        default=None, description="Pass as ?cursor= for the next page; null on the last page"
    )


class RunOutputs(_Out):
    """The outputs of the steps of a run that produced one."""

    run_id: str
    outputs: dict[str, Any]


class RunCounts(_Out):
    """How many runs are in each state."""

    counts: dict[str, int]
    total: int


# -- logs and events ---------------------------------------------------------------


class LogLinePublic(_Out):
    """One line a step wrote (secrets masked)."""

    id: int = Field(description="Increasing; pass as ?after= (or Last-Event-ID) to resume")
    node: str
    attempt: int
    stream: str = Field(description="stdout or stderr")
    line: str
    time: dt.datetime


class LogList(_Out):
    """Log lines in order, and where to continue from."""

    items: list[LogLinePublic]
    next_after: int = Field(description="The id to pass as ?after= to get the lines after these")
    run_state: RunState


class EventPublic(_Out):
    """One recorded lifecycle event of a run."""

    seq: int = Field(description="Increasing; pass as ?after= to resume")
    id: str = Field(description="Unique event id (de-duplicate on it)")
    type: str
    time: dt.datetime
    namespace: str
    pipeline: str
    pipeline_version: str
    run_id: str
    node: str | None = None
    attempt: int | None = None
    message: str = ""
    labels: dict[str, Any] = Field(default_factory=dict)
    data: dict[str, Any] = Field(default_factory=dict)


class EventList(_Out):
    """Events in order, and where to continue from."""

    items: list[EventPublic]
    next_after: int = Field(description="The seq to pass as ?after= to get later events")


# -- pipelines -----------------------------------------------------------------------

#: What ``POST /namespaces/{ns}/pipelines`` takes: the compiled pipeline spec
#: (``ferryman.dsl`` / the YAML loader produce it; ``spec.model_dump(mode="json")``).
PipelineCreate = PipelineSpec


class PipelineRegistered(_Out):
    """The result of registering a pipeline."""

    namespace: str
    name: str
    version: str
    created: bool = Field(description="False when this exact definition was already stored")
    warnings: list[str] = Field(
        default_factory=list, description="e.g. a trigger on a pipeline not registered yet"
    )


class PipelinePublic(_Out):
    """A registered pipeline, in a list."""

    namespace: str
    name: str
    latest_version: str
    versions: int
    updated_at: dt.datetime


class PipelineList(_Out):
    """Pipelines, by namespace and name."""

    items: list[PipelinePublic]


class StepPublic(_Out):
    """One step of a pipeline, as shown to users."""

    name: str
    kind: str
    depends_on: list[str]
    infrastructure: str | None = None
    retries: int = 0
    timeout: float | None = None


class TriggerPublic(_Out):
    """An event trigger: this pipeline runs when a run of ``pipeline`` ends in ``states``."""

    namespace: str = Field(description="Namespace of the triggering pipeline")
    pipeline: str = Field(description="The triggering pipeline")
    states: list[str]
    params: dict[str, Any] = Field(
        description='Parameter mapping: {"$param": x}, {"$step": y}, {"$run": field} or literals'
    )
    labels: dict[str, str] = Field(default_factory=dict)
    inherit_labels: bool = True


class PipelineDetail(_Out):
    """One version of a pipeline: its parameters (as declared, and as JSON
    Schema) and steps."""

    namespace: str
    name: str
    version: str
    created_at: dt.datetime
    description: str = ""
    params: list[ParamSpec] = Field(
        default_factory=list,
        description="The parameters as declared: type, required, default, constraints",
    )
    params_schema: dict[str, Any] = Field(description="JSON Schema of the run parameters")
    steps: list[StepPublic]
    labels: dict[str, str] = Field(default_factory=dict)
    timeout: float | None = None
    infrastructure: str = "process"
    triggers: list[TriggerPublic] = Field(default_factory=list)

    @classmethod
    def of(
        cls,
        namespace: str,
        version: str,
        created_at: dt.datetime,
        spec: PipelineSpec,
        *,
        params_schema: dict[str, Any],
        triggers: list[dict[str, Any]],
    ) -> PipelineDetail:
        """Build from a stored version's spec (``triggers``: ``triggers_of``)."""
        return cls(
            namespace=namespace,
            name=spec.name,
            version=version,
            created_at=created_at,
            description=spec.description,
            params=list(spec.params),
            params_schema=params_schema,
            steps=[
                StepPublic(
                    name=s.name,
                    kind=s.kind,
                    depends_on=list(s.depends_on),
                    infrastructure=s.infrastructure or spec.infrastructure,
                    retries=s.retries,
                    timeout=s.timeout,
                )
                for s in spec.steps
            ],
            labels=dict(spec.labels),
            timeout=spec.timeout,
            infrastructure=spec.infrastructure,
            triggers=[TriggerPublic.model_validate(t) for t in triggers],
        )


class VersionPublic(_Out):
    """A stored version of a pipeline."""

    version: str
    created_at: dt.datetime


class VersionList(_Out):
    """The versions of a pipeline, newest first."""

    items: list[VersionPublic]

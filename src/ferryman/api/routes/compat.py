"""The route clients of the system ferryman replaces already call:
``POST /{namespace}/pipelines/run/{pipeline_name}/`` with the parameters as
the JSON body, plus an optional ``webhook_uri`` key for the completion
callback. It behaves exactly like ``POST /namespaces/{ns}/pipelines/{name}/runs``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Response
from pydantic import ValidationError

from ferryman.api.deps import Operator, RunsDep, SettingsDep
from ferryman.api.routes.pipelines import Namespace, PipelineName
from ferryman.api.routes.runs import IdempotencyKey, start_run
from ferryman.api.schemas import RunCreate, RunCreated
from ferryman.domain.params import ParamError, ParamsInvalid
from ferryman.errors import InvalidInput

router = APIRouter(tags=["compatibility"])


def _body(raw: Any) -> RunCreate:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsInvalid([ParamError("", "the body must be a JSON object of parameters")])
    params = dict(raw)
    uri = params.pop("webhook_uri", None)
    try:
        return RunCreate(params=params, webhook_url=uri)
    except ValidationError as exc:
        details = [
            {"path": "webhook_uri", "reason": e["msg"]} for e in exc.errors(include_url=False)
        ]
        raise InvalidInput("invalid webhook_uri", details) from None


@router.post(
    "/{namespace}/pipelines/run/{pipeline_name}/",
    response_model=RunCreated,
    status_code=201,
    summary="Start a run (compatibility route: the body is the parameters)",
    responses={
        200: {"description": "The run this Idempotency-Key already created", "model": RunCreated},
        404: {"description": "No such pipeline"},
        422: {"description": "Invalid parameters (every error, with its path)"},
    },
)
@router.post(
    "/{namespace}/pipelines/run/{pipeline_name}",
    response_model=RunCreated,
    status_code=201,
    include_in_schema=False,
)
def compat_run(
    namespace: Namespace,
    pipeline_name: PipelineName,
    runs: RunsDep,
    settings: SettingsDep,
    principal: Operator,
    idempotency_key: IdempotencyKey = None,
    body: Annotated[Any, Body(description="The parameters, plus an optional webhook_uri")] = None,
) -> Response:
    """Pop ``webhook_uri`` (it becomes the run's webhook_url); the rest are the
    parameters, validated like any run's."""
    return start_run(
        runs=runs,
        settings=settings,
        principal=principal,
        namespace=namespace,
        pipeline=pipeline_name,
        body=_body(body),
        idempotency_key=idempotency_key,
        via="compat",
    )

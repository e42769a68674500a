"""A drop-in for the pipeline-run API ferryman replaces.

Its clients call ``POST /{namespace}/pipelines/run/{pipeline_name}/`` with the
parameters as the JSON body (plus an optional ``webhook_uri``, and
``channel``/``slack_thread`` for a Slack reply) and parse its answers:
``{"status": "ok", "response": {"run_id", ...}}`` (200), or
``{"status": "error", "response": {"message"}}`` (400) for an unknown pipeline
or invalid parameters; authentication failures are 401 ``{"detail": ...}``
with ``WWW-Authenticate: Bearer``. ``GET /`` is its health check. Runs start
through ``RunService.start`` like any other; the completion webhook of a run
started here has the old body (``notify.compat``), durable, retried and signed.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import HttpUrl, TypeAdapter, ValidationError

from ferryman.api.deps import RunsDep, SettingsDep, StoreDep, principal_of
from ferryman.api.routes.pipelines import check_size, nul_paths
from ferryman.api.routes.runs import IdempotencyKey
from ferryman.api.schemas import CompatDetail, CompatErrorBody, CompatRunCreated
from ferryman.domain.options import Origin, RunOptions
from ferryman.domain.params import ParamsInvalid
from ferryman.errors import FerrymanError
from ferryman.http import destination_policy
from ferryman.notify.compat import COMPAT_FORMAT, created_body, error_body
from ferryman.notify.report import run_links
from ferryman.services.auth import AuthError, Forbidden, Principal, Role
from ferryman.services.catalog import latest, resolve_name
from ferryman.services.runs import RunService
from ferryman.services.subscriptions import check_destination
from ferryman.settings import Settings

router = APIRouter(tags=["compatibility"])

_bearer = HTTPBearer(auto_error=False, description="JWT from POST /token, or an API token")
_Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
_URL = TypeAdapter(HttpUrl)
#: Body keys the old API took besides the parameters: (key, RunOptions field).
_SLACK_KEYS = (("channel", "slack_channel"), ("slack_thread", "slack_thread"))


class CompatError(Exception):
    """An answer in the old error shape (``status`` 400 unless said)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def _answer(body: dict[str, Any], status: int, headers: dict[str, str] | None = None) -> Any:
    return JSONResponse(body, status_code=status, headers=headers)


def _params_message(exc: ParamsInvalid) -> str:
    return "Invalid parameters: " + "; ".join(
        f"{e.path or '(body)'}: {e.reason}" for e in exc.errors
    )


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CompatError(f"the body is not JSON: {exc}") from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise CompatError("the body must be a JSON object of parameters")
    return value


def _options(
    params: dict[str, Any], declared: set[str], settings: Settings
) -> tuple[dict[str, Any], RunOptions]:
    """Split the old body into parameters and run options."""
    given: dict[str, Any] = {}
    uri = params.pop("webhook_uri", None)
    if uri is not None:
        try:
            url = str(_URL.validate_python(uri))
        except ValidationError as exc:
            raise CompatError(f"webhook_uri: {exc.errors(include_url=False)[0]['msg']}") from None
        check_destination(url, destination_policy(settings), "webhook_uri")
        given |= {"webhook_url": url, "webhook_format": COMPAT_FORMAT}
    for key, field in _SLACK_KEYS:
        value = params.get(key)
        if isinstance(value, str) and value.strip() and "\x00" not in value:
            given[field] = value.strip()[:128]
        if key not in declared:
            params.pop(key, None)  # the pipeline does not take it: an option only
    if "slack_thread" in given and "slack_channel" not in given:
        del given["slack_thread"]
    return params, RunOptions.model_validate(given)


def _principal(request: Request, creds: HTTPAuthorizationCredentials | None) -> Principal:
    principal = principal_of(request, creds)
    principal.require(Role.OPERATOR)
    return principal


@router.get(
    "/",
    summary="Health check of the replaced API: ok when the database answers",
    responses={503: {"description": "database unreachable"}},
)
def compat_health(store: StoreDep) -> Any:
    """``{"status": "ok", "response": {"message"}}``, or 503 in the error shape."""
    if not store.ping():
        return _answer(error_body("database unreachable"), 503, {"Retry-After": "5"})
    return {"status": "ok", "response": {"message": "ferryman is up and the database answers."}}


@router.post(
    "/{namespace}/pipelines/run/{pipeline_name}/",
    summary="Start a run (compatibility route: the body is the parameters)",
    response_model=CompatRunCreated,
    responses={
        400: {
            "description": "Unknown pipeline or invalid parameters (every error)",
            "model": CompatErrorBody,
        },
        401: {"description": "Missing or invalid credentials", "model": CompatDetail},
        403: {"description": "The role does not allow it", "model": CompatDetail},
    },
)
@router.post("/{namespace}/pipelines/run/{pipeline_name}", include_in_schema=False)
async def compat_run(
    request: Request,
    namespace: str,
    pipeline_name: str,
    runs: RunsDep,
    settings: SettingsDep,
    creds: _Credentials,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """Pop ``webhook_uri`` (the run's webhook, answered in the old shape) and
    ``channel``/``slack_thread`` (a Slack reply); the rest are the parameters,
    validated like any run's. 200 with the old success body."""
    from starlette.concurrency import run_in_threadpool

    try:
        principal = await run_in_threadpool(_principal, request, creds)
    except AuthError as exc:
        return _answer({"detail": exc.message}, 401, {"WWW-Authenticate": "Bearer"})
    except Forbidden as exc:
        return _answer({"detail": exc.message}, 403)
    try:
        body = await _json_body(request)
        return await run_in_threadpool(
            _start, runs, settings, principal, namespace, pipeline_name, body, idempotency_key
        )
    except CompatError as exc:
        return _answer(error_body(exc.message), exc.status)
    except ParamsInvalid as exc:
        return _answer(error_body(_params_message(exc)), 400)
    except FerrymanError as exc:  # unknown pipeline, a refused webhook, a re-used key...
        return _answer(error_body(exc.message), 400)


def _start(
    runs: RunService,
    settings: Settings,
    principal: Principal,
    namespace: str,
    pipeline_name: str,
    body: dict[str, Any],
    idempotency_key: str | None,
) -> Any:
    with runs.store.read() as conn:
        name = resolve_name(conn, namespace, pipeline_name)
        declared = {p.name for p in latest(conn, namespace, name).spec.params}
    params, options = _options(dict(body), declared, settings)
    check_size("params", params, settings.api.max_params_bytes, "FERRYMAN_MAX_PARAMS_BYTES")
    bad = nul_paths(params)
    if bad:
        raise CompatError(f"Invalid parameters: {', '.join(bad)}: contains a NUL character")
    started = runs.start(
        namespace,
        name,
        params,
        options=options,
        origin=Origin(kind="compat", user=principal.username),
        idempotency_key=idempotency_key,
    )
    run = started.record
    return _answer(created_body(run, run_links(settings, run["id"])["ui"]), 200)

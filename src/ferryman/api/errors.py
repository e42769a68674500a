"""One JSON error shape everywhere: ``{"error": {"code", "message", "details"}}``.

Every expected failure maps to its status code; a database outage is a 503
with ``Retry-After`` and one line in the log; anything unexpected becomes a
500 with a generic message (the traceback goes to the server log, never to
the client).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from ferryman.domain.params import ParamsInvalid
from ferryman.errors import Conflict, FerrymanError, InvalidInput, NotFound, TooLarge
from ferryman.services.auth import AuthError, Forbidden, TooManyAttempts
from ferryman.store.engine import describe_unavailable, is_unavailable

log = logging.getLogger(__name__)
#: Seconds a client is told to wait when the database is unavailable.
OUTAGE_RETRY_AFTER = 5

STATUS: dict[type[FerrymanError], int] = {
    NotFound: 404,
    Conflict: 409,
    InvalidInput: 422,
    TooLarge: 413,
    AuthError: 401,
    Forbidden: 403,
    TooManyAttempts: 429,
}
HTTP_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 409: "conflict", 413: "too_large", 415: "unsupported_media_type",
    422: "invalid", 429: "too_many_requests", 503: "unavailable",
}  # fmt: skip


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def _loc(loc: tuple[Any, ...]) -> str:
    parts = [str(x) for x in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:] if len(parts) > 1 else parts
    return ".".join(parts)


ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "details"],
            "properties": {
                "code": {"type": "string", "description": "Stable, machine-readable code"},
                "message": {"type": "string", "description": "What went wrong, for humans"},
                "details": {"description": "Per-field problems and the like, or null"},
            },
        }
    },
}
_ERROR_REF = {"$ref": "#/components/schemas/Error"}
_FASTAPI_ERRORS = ("HTTPValidationError", "ValidationError")


def document_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """Make the OpenAPI document tell the truth about errors.

    FastAPI documents its own 422 body (``{"detail": [...]}``), which this API
    never sends: every 4xx is described with the ``Error`` shape instead, and
    each operation that needs credentials also lists its 401.
    """
    comps = schema.setdefault("components", {}).setdefault("schemas", {})
    comps["Error"] = ERROR_SCHEMA
    for item in schema.get("paths", {}).values():
        for op in item.values():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            if "compatibility" in op.get("tags", ()):
                continue  # the replaced API's own shapes, as its clients parse them
            responses: dict[str, Any] = op["responses"]
            if op.get("security") and "401" not in responses:
                responses["401"] = {
                    "description": "missing, invalid, expired or revoked credentials"
                }
            for status, response in responses.items():
                if str(status).startswith("4"):
                    response["content"] = {"application/json": {"schema": _ERROR_REF}}
    for name in _FASTAPI_ERRORS:  # in this order: the first refers to the second
        if name in comps and f'"#/components/schemas/{name}"' not in json.dumps(schema):
            del comps[name]
    return schema


def install(app: FastAPI) -> None:
    """Register the handlers that produce the error shape, and document it."""
    build_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_errors(build_openapi())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.exception_handler(FerrymanError)
    async def _ferryman(_: Request, exc: FerrymanError) -> JSONResponse:
        status = next((s for t, s in STATUS.items() if isinstance(exc, t)), 400)
        headers = {}
        if status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        if isinstance(exc, TooManyAttempts):
            headers["Retry-After"] = str(exc.retry_after)
        return JSONResponse(
            error_body(exc.code, exc.message, exc.details), status_code=status, headers=headers
        )

    @app.exception_handler(ParamsInvalid)
    async def _params(_: Request, exc: ParamsInvalid) -> JSONResponse:
        details = [{"path": e.path, "reason": e.reason} for e in exc.errors]
        return JSONResponse(
            error_body("invalid_params", f"{len(details)} parameter error(s)", details),
            status_code=422,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"path": _loc(tuple(e.get("loc", ()))), "reason": e.get("msg", "invalid")}
            for e in exc.errors()
        ]
        return JSONResponse(
            error_body("invalid", f"{len(details)} input error(s)", details), status_code=422
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = HTTP_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        return JSONResponse(
            error_body(code, message), status_code=exc.status_code, headers=exc.headers
        )

    async def _database(request: Request, exc: Exception) -> JSONResponse:
        if not is_unavailable(exc):
            return _internal(request)
        # An outage fails every request alike: one line each, no traceback.
        log.warning(
            "database unavailable: %s %s answered 503 (%s)",
            request.method,
            request.url.path,
            describe_unavailable(exc),
        )
        return JSONResponse(
            error_body("unavailable", "the database is unavailable; try again later"),
            status_code=503,
            headers={"Retry-After": str(OUTAGE_RETRY_AFTER)},
        )

    for kind in (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError):
        app.add_exception_handler(kind, _database)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return _internal(request)


def _internal(request: Request) -> JSONResponse:
    """500, the traceback of the exception being handled to the log."""
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse(
        error_body("internal", "internal server error (the details are in the server log)"),
        status_code=500,
    )

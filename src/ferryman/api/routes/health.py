"""Liveness and readiness (no authentication)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from ferryman import __version__
from ferryman.api.deps import StoreDep
from ferryman.api.errors import error_body

router = APIRouter(tags=["health"])


@router.get("/health", summary="Liveness: the process answers")
def health() -> dict[str, Any]:
    return {"status": "ok", "version": __version__}


@router.get(
    "/ready",
    summary="Readiness: the database answers",
    responses={503: {"description": "database unreachable"}},
)
def ready(store: StoreDep) -> Any:
    if not store.ping():
        return JSONResponse(error_body("unavailable", "database unreachable"), status_code=503)
    return {"status": "ready", "database": store.url.get_backend_name()}

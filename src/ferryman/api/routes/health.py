"""Liveness and readiness (no authentication)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from ferryman import __version__
from ferryman.api.deps import StoreDep
from ferryman.api.errors import OUTAGE_RETRY_AFTER, error_body

router = APIRouter(tags=["health"])


@router.get("/health", summary="Liveness: the process answers")
async def health() -> dict[str, Any]:
    # A coroutine: it answers from the event loop, whatever the thread pool is doing.
    return {"status": "ok", "version": __version__}


@router.get(
    "/ready",
    summary="Readiness: the database answers",
    responses={503: {"description": "database unreachable"}},
)
def ready(store: StoreDep) -> Any:
    if not store.ping():
        return JSONResponse(
            error_body("unavailable", "database unreachable"),
            status_code=503,
            headers={"Retry-After": str(OUTAGE_RETRY_AFTER)},
        )
    return {"status": "ready", "database": store.url.get_backend_name()}

"""The REST API application: ``create_app(settings, store)``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from ferryman import __version__
from ferryman.api import errors
from ferryman.api.routes import auth, health
from ferryman.services.runs import RunService
from ferryman.settings import Settings
from ferryman.store.engine import Store


def create_app(settings: Settings, store: Store | None = None) -> FastAPI:
    """Build the API. The caller owns the store's lifetime when it passes one."""
    app = FastAPI(
        title="ferryman",
        version=__version__,
        description="Self-hosted pipeline orchestration: pipelines, runs, logs and events.",
    )
    app.state.settings = settings
    app.state.store = store or Store.from_settings(settings)
    app.state.runs = RunService(app.state.store)
    errors.install(app)
    app.include_router(health.router)
    app.include_router(auth.router)
    for module in _optional_routers():
        app.include_router(module.router)
    return app


def _optional_routers() -> list[Any]:
    """Route modules written as the API grows (each exposes ``router``)."""
    import importlib

    found: list[Any] = []
    for name in ("pipelines", "runs", "compat", "users", "tokens", "subscriptions"):
        try:
            found.append(importlib.import_module(f"ferryman.api.routes.{name}"))
        except ModuleNotFoundError as exc:
            if exc.name != f"ferryman.api.routes.{name}":
                raise
    return found

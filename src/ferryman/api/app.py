"""The REST API application: ``create_app(settings, store)``."""

from __future__ import annotations

from fastapi import FastAPI

from ferryman import __version__
from ferryman.api import errors
from ferryman.api.routes import (
    auth,
    compat,
    health,
    pipelines,
    runs,
    subscriptions,
    tokens,
    users,
)
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
    app.state.runs = RunService(app.state.store, trigger_max_depth=settings.trigger_max_depth)
    errors.install(app)
    for module in (health, auth, pipelines, runs, compat, users, tokens, subscriptions):
        app.include_router(module.router)
    return app

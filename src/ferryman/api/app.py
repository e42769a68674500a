"""The REST API application: ``create_app(settings, store)``."""

from __future__ import annotations

from fastapi import FastAPI

from ferryman import __version__
from ferryman.api import errors
from ferryman.api.body_limit import BodyLimit
from ferryman.api.input_guard import InputGuard
from ferryman.api.login_gate import LoginGate
from ferryman.api.routes import (
    auth,
    compat,
    health,
    pipelines,
    runs,
    schedules,
    secrets,
    subscriptions,
    tokens,
    users,
)
from ferryman.home_secrets import LazySecret, jwt_secret
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
    app.state.runs = RunService(
        app.state.store, trigger_max_depth=settings.worker.trigger_max_depth
    )
    # FERRYMAN_JWT_SECRET, else the home's generated one: read when first needed
    app.state.jwt_secret = LazySecret(lambda: jwt_secret(settings))
    app.state.login_gate = LoginGate(settings)
    errors.install(app)
    # Values no database keeps (lone surrogates, NUL, non-finite numbers) are
    # refused before routing, for every route at once.
    app.add_middleware(InputGuard)
    # Added last, so outermost: no body past the limit is read by anyone.
    app.add_middleware(BodyLimit, limit=settings.api.http_max_body_bytes)
    for module in (
        health,
        auth,
        pipelines,
        runs,
        compat,
        users,
        tokens,
        subscriptions,
        schedules,
        secrets,
    ):
        app.include_router(module.router)
    if settings.slack.bot_enabled:
        from ferryman.slack.routes import mount  # slack_bolt only when the bot is on

        mount(app, settings, app.state.store, app.state.runs)
    return app

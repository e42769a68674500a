"""``POST /slack/events``: Slack's events, slash commands and interactivity,
handed to the bot's slack_bolt app (which verifies every request first)."""

from __future__ import annotations

from fastapi import FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool

from ferryman.services.runs import RunService
from ferryman.settings import Settings
from ferryman.slack.bot import SlackBot, dispatch
from ferryman.store.engine import Store

PATH = "/slack/events"


def mount(app: FastAPI, settings: Settings, store: Store, runs: RunService) -> SlackBot:
    """Add the bot's route to ``app``; the bot is kept as ``app.state.slack_bot``."""
    bot = SlackBot(settings, store, runs)
    app.state.slack_bot = bot

    async def slack_events(request: Request) -> Response:
        body = await request.body()
        # Bolt is synchronous (its listener writes to the database): a pool thread
        resp = await run_in_threadpool(
            dispatch,
            bot,
            body.decode("utf-8", "replace"),
            {k: v for k, v in request.headers.items()},
            request.url.query,
        )
        return Response(
            content=resp.body,
            status_code=resp.status,
            headers=resp.first_headers_without_set_cookie(),
        )

    app.add_api_route(
        PATH,
        slack_events,
        methods=["POST"],
        tags=["slack"],
        summary="Slack events, slash commands and interactivity (signed by Slack)",
    )
    return bot

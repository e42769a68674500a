"""The loop keeping the bot's run messages current (``chat.update``).

Each run message the bot posted (``slack_messages``) is looked at no more
often than ``FERRYMAN_SLACK_UPDATE_SECONDS``; when its run's state or
progress changed since it was last shown, the message is edited in place
(the line and its buttons). A message is done once it shows a final state.
The completion itself is posted by the run-completion callbacks, durably;
this loop only keeps the first message honest, so losing an edit costs
nothing but a stale line until the next turn.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from ferryman.engine.clock import Clock
from ferryman.engine.loop import Loop
from ferryman.errors import NotFound
from ferryman.http import describe, destination_policy
from ferryman.notify.report import run_links
from ferryman.services import chatops, queries
from ferryman.settings import Settings
from ferryman.slack import render
from ferryman.store.engine import Store
from ferryman.store.tables import utcnow

if TYPE_CHECKING:
    from slack_sdk import WebClient

_FINAL = ("succeeded", "failed", "cancelled")
#: Slack errors after which a message cannot be edited any more
_GONE = ("message_not_found", "channel_not_found", "cant_update_message", "is_archived")
_BATCH = 50


class RunMessageUpdater(Loop):
    """Edits run messages as their runs progress (throttled per message)."""

    name = "slack updater"

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        client: WebClient | None = None,
        clock: Clock | None = None,
    ) -> None:
        every = settings.slack.update_seconds
        super().__init__(
            store,
            poll_seconds=every,
            grace_seconds=settings.loops.grace_seconds,
            clock=clock,
        )
        self.settings = settings
        self.every = dt.timedelta(seconds=every)
        self._client = client

    def client(self) -> WebClient:
        if self._client is None:
            from ferryman.http.slack import slack_client

            token = self.settings.slack.bot_token
            assert token is not None, "the updater needs FERRYMAN_SLACK_BOT_TOKEN"
            self._client = slack_client(
                token.get_secret_value(),
                base_url=self.settings.slack.api_url,
                timeout=self.settings.callbacks.timeout,
                policy=destination_policy(self.settings),
            )
        return self._client

    def _due(self) -> list[Any]:
        with self.store.read() as conn:
            return chatops.due_messages(conn, utcnow() - self.every, _BATCH)

    def idle(self) -> bool:
        """Drain mode: no message is due."""
        return not self._due()

    def turn(self) -> int:
        """Edit the due messages whose run changed; returns how many were edited."""
        edited = 0
        for m in self._due():
            if self.stopping:
                break
            try:
                with self.store.read() as conn:
                    run = queries.get_run(conn, m.run_id, with_nodes=False)
            except NotFound:
                with self.store.write() as conn:
                    chatops.message_shown(conn, m.id, m.shown, True)
                continue
            key = render.shown_key(run)
            done = run["state"] in _FINAL
            if key != m.shown:
                gone = self._edit(m.channel, m.ts, run)
                done = done or gone
                edited += 1
            with self.store.write() as conn:
                chatops.message_shown(conn, m.id, key, done)
        return edited

    def _edit(self, channel: str, ts: str, run: dict[str, Any]) -> bool:
        """Edit one message; True when it can never be edited again."""
        text, blocks = render.run_message(run, run_links(self.settings, run["id"])["ui"])
        try:
            self.client().chat_update(channel=channel, ts=ts, text=text, blocks=blocks)
        except Exception as exc:
            token = self.settings.slack.bot_token
            secrets = [token.get_secret_value()] if token else []
            error = describe(exc, timeout=self.settings.callbacks.timeout, secrets=secrets).error
            self.log.warning("slack: could not update the message of run %s: %s", run["id"], error)
            return any(code in error for code in _GONE)
        return False

"""The Slack bot: a slack_bolt ``App`` and what it does with each request.

Slack's requests are verified by Bolt (signature and timestamp: older than 5
minutes, missing or wrong → 401, nothing processed). A listener does the
durable part in the request, before the answer: the command is recorded under
the event's id (unique: a retried or duplicated event is answered once) and
the run started with that id as its idempotency key. That takes milliseconds,
well inside Slack's 3 s. The Slack messages (answers, run messages) are
posted afterwards from a small thread pool, so Slack's latency never delays
the ack; a run's completion goes through the run-completion callbacks (its
options name the channel and thread), which survive any restart.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from slack_bolt import App, BoltResponse

from ferryman.errors import FerrymanError
from ferryman.http import describe, destination_policy
from ferryman.http.slack import slack_client
from ferryman.services import chatops
from ferryman.services.auth import Principal, Role
from ferryman.services.runs import RunService
from ferryman.settings import Settings
from ferryman.slack import forms, render
from ferryman.slack.commands import Context, Refused, Reply, execute
from ferryman.slack.grammar import Command, GrammarError, parse
from ferryman.store.engine import Store
from ferryman.store.tables import new_id

if TYPE_CHECKING:
    from slack_sdk import WebClient

log = logging.getLogger(__name__)

_EMAIL_TTL = 600.0  # seconds a users.info answer is trusted
_SLACK_TIMEOUT = 10.0


class SlackBot:
    """The bot of one server: Bolt's app, the Slack client and the posting pool."""

    def __init__(self, settings: Settings, store: Store, runs: RunService) -> None:
        token, secret = settings.slack.bot_token, settings.slack.signing_secret
        assert token is not None and secret is not None, "the bot needs a token and a secret"
        self.settings = settings
        self.store = store
        self.runs = runs
        self._secrets = [token.get_secret_value(), secret.get_secret_value()]
        self.client: WebClient = slack_client(
            token.get_secret_value(),
            base_url=settings.slack.api_url,
            timeout=_SLACK_TIMEOUT,
            policy=destination_policy(settings),
        )
        self.app = App(
            signing_secret=secret.get_secret_value(),
            client=self.client,
            token_verification_enabled=False,  # no auth.test at start-up
            process_before_response=True,  # the listener's durable part precedes the ack
            raise_error_for_unhandled_request=False,
            logger=logging.getLogger("ferryman.slack.bolt"),
        )
        self._pool = ThreadPoolExecutor(4, thread_name_prefix="ferryman-slack")
        self._emails: dict[str, tuple[float, str | None]] = {}
        self._emails_lock = threading.Lock()
        self._register()

    def close(self) -> None:
        """Let the posts in flight finish."""
        self._pool.shutdown(wait=True)

    # -- listeners ------------------------------------------------------------------

    def _register(self) -> None:
        app = self.app

        @app.event("app_mention")
        def mention(body: dict[str, Any], event: dict[str, Any]) -> None:
            self._on_event(body, event)

        @app.event("message")
        def message(body: dict[str, Any], event: dict[str, Any]) -> None:
            # direct messages only; not the bot's own, not edits/joins (subtypes)
            direct = event.get("channel_type") == "im"
            if direct and not event.get("bot_id") and not event.get("subtype"):
                self._on_event(body, event)

        @app.command("/ferryman")
        def slash(ack: Any, command: dict[str, Any]) -> None:
            self._on_slash(ack, command)

        @app.action(render.CANCEL)
        @app.action(render.RERUN)
        @app.action(render.LOGS)
        def button(ack: Any, body: dict[str, Any], action: dict[str, Any]) -> None:
            ack()
            self._on_button(body, action)

        @app.view(forms.CALLBACK_ID)
        def submit(ack: Any, body: dict[str, Any], view: dict[str, Any]) -> None:
            self._on_submit(ack, body, view)

    def _on_event(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        thread = event.get("thread_ts") or event.get("ts")
        self.handle(
            event_key=f"event:{body.get('event_id') or event.get('client_msg_id') or thread}",
            slack_user=str(event.get("user") or ""),
            channel=str(event.get("channel") or ""),
            thread_ts=str(thread) if thread else None,
            text=str(event.get("text") or ""),
        )

    def _on_slash(self, ack: Any, command: dict[str, Any]) -> None:
        text = str(command.get("text") or "")
        user, channel = str(command.get("user_id") or ""), str(command.get("channel_id") or "")
        words = text.split()
        if words and words[0].lower() in ("launch", "form"):
            ack()
            self._open_form(command, words[1] if len(words) > 1 else "")
            return
        ack()
        self.handle(
            event_key=f"slash:{command.get('trigger_id') or new_id()}",
            slack_user=user,
            channel=channel,
            thread_ts=None,
            text=text,
        )

    def _on_button(self, body: dict[str, Any], action: dict[str, Any]) -> None:
        verb = {render.CANCEL: "cancel", render.RERUN: "rerun", render.LOGS: "logs"}
        message = body.get("message") or {}
        container = body.get("container") or {}
        channel = str((body.get("channel") or {}).get("id") or container.get("channel_id") or "")
        thread = message.get("thread_ts") or message.get("ts") or container.get("message_ts")
        run_id = str(action.get("value") or "")
        self.handle(
            event_key=f"action:{action.get('action_ts') or new_id()}:{run_id}",
            slack_user=str((body.get("user") or {}).get("id") or ""),
            channel=channel,
            thread_ts=str(thread) if thread else None,
            text=f"{verb[str(action.get('action_id'))]} {run_id}",
        )

    # -- one command ----------------------------------------------------------------

    def handle(
        self,
        *,
        event_key: str,
        slack_user: str,
        channel: str,
        thread_ts: str | None,
        text: str,
        command: Command | None = None,
    ) -> Reply | None:
        """Take one command: record it (once per event), check who asked and
        where, run it, record the outcome, and post the answer afterwards.
        Returns the reply (None for a duplicate event)."""
        try:
            verb = command.verb if command else parse(text).verb
        except GrammarError:
            verb = "?"
        try:
            with self.store.write() as conn:
                cid = chatops.record_command(
                    conn,
                    event_key=event_key,
                    slack_user=slack_user,
                    channel=channel,
                    command=verb,
                    text=text,
                )
        except sa.exc.IntegrityError:
            log.info("slack: event %s already taken (a retry or a duplicate)", event_key)
            return None
        principal: Principal | None = None
        error_id = None
        try:
            if not self.settings.slack.channel_allowed(channel):
                raise Refused("I don't take commands in this channel")
            principal = self.who(slack_user)
            if principal is None:
                raise Refused(
                    "I don't know you: ask a ferryman admin to set your Slack user id "
                    f"(`{render.esc(slack_user)}`) on your ferryman user"
                )
            cmd = command or parse(text)
            ctx = Context(
                self.settings, self.store, self.runs, principal, channel, thread_ts, event_key
            )
            reply = execute(ctx, cmd)
        except Refused as exc:
            reply = Reply(f":lock: {exc}", outcome="refused", detail=str(exc))
        except GrammarError as exc:
            reply = Reply(f":thinking_face: {exc}", outcome="invalid", detail=str(exc))
        except FerrymanError as exc:  # no such run or pipeline, a conflict, ...
            reply = Reply(
                f":warning: {render.esc(exc.message)}", outcome="invalid", detail=exc.message
            )
        except Exception:
            error_id = new_id()[:12]
            log.exception("slack: command %s failed (error id %s)", event_key, error_id)
            reply = Reply(
                f":x: Something went wrong on my side (error id `{error_id}`); "
                "an admin finds the details in the server log.",
                outcome="error",
            )
        try:
            with self.store.write() as conn:
                chatops.finish_command(
                    conn,
                    cid,
                    outcome=reply.outcome,
                    username=principal.username if principal else None,
                    detail=reply.detail,
                    run_id=reply.run_id,
                    error_id=error_id,
                )
        except sa.exc.SQLAlchemyError:
            log.warning("slack: could not record the outcome of %s", event_key, exc_info=True)
        self._pool.submit(self.post, channel, thread_ts, reply)
        return reply

    def who(self, slack_user: str) -> Principal | None:
        """The ferryman user a Slack user is: by Slack user id, else by the
        e-mail ``users.info`` gives; else the role for unknown users, if set."""
        if not slack_user:
            return None
        with self.store.read() as conn:
            principal = chatops.principal_for_slack_user(conn, slack_user)
        if principal is None:
            email = self._email(slack_user)
            if email:
                with self.store.read() as conn:
                    principal = chatops.principal_for_email(conn, email)
        role = self.settings.slack.unknown_user_role
        if principal is None and role:
            principal = Principal(0, f"slack:{slack_user}", Role(role), "slack")
        return principal

    def _email(self, slack_user: str) -> str | None:
        now = time.monotonic()
        with self._emails_lock:
            cached = self._emails.get(slack_user)
        if cached and now - cached[0] < _EMAIL_TTL:
            return cached[1]
        email = None
        try:
            resp = self.client.users_info(user=slack_user)
            email = ((resp.get("user") or {}).get("profile") or {}).get("email")
        except Exception as exc:  # not found, no scope, Slack down: not a known user
            log.info("slack: users.info for %s: %s", slack_user, self._safe(exc))
        with self._emails_lock:
            self._emails[slack_user] = (now, email if isinstance(email, str) else None)
        return email if isinstance(email, str) else None

    # -- posting ----------------------------------------------------------------------

    def post(self, channel: str, thread_ts: str | None, reply: Reply) -> str | None:
        """Post ``reply`` in ``thread_ts`` of ``channel``; a run message is
        remembered so the updater keeps it current. Returns the message's ts."""
        try:
            resp = self.client.chat_postMessage(
                channel=channel,
                thread_ts=thread_ts,
                text=reply.text,
                blocks=reply.blocks,
                unfurl_links=False,
                unfurl_media=False,
            )
        except Exception as exc:
            log.warning("slack: could not answer in %s: %s", channel, self._safe(exc))
            return None
        ts = resp.get("ts")
        if reply.run_id and isinstance(ts, str):
            try:
                with self.store.write() as conn:
                    chatops.track_message(conn, reply.run_id, channel, ts, reply.shown)
            except sa.exc.SQLAlchemyError:
                log.warning("slack: could not remember the message of run %s", reply.run_id)
        return ts if isinstance(ts, str) else None

    def _safe(self, exc: BaseException) -> str:
        return describe(exc, timeout=_SLACK_TIMEOUT, secrets=self._secrets).error

    # -- the launch form ----------------------------------------------------------------

    def _open_form(self, command: dict[str, Any], pipeline: str) -> None:
        user = str(command.get("user_id") or "")
        channel = str(command.get("channel_id") or "")
        try:
            view = forms.launch_view(self.store, self.settings, pipeline, channel)
            self.client.views_open(trigger_id=command.get("trigger_id"), view=view)
        except (FerrymanError, GrammarError) as exc:
            message = exc.message if isinstance(exc, FerrymanError) else str(exc)
            reply = Reply(f":warning: {render.esc(message)}", outcome="invalid")
            self._pool.submit(self._ephemeral, channel, user, reply.text)
        except Exception as exc:
            log.warning("slack: could not open the launch form: %s", self._safe(exc))

    def _ephemeral(self, channel: str, user: str, text: str) -> None:
        try:
            self.client.chat_postEphemeral(channel=channel, user=user, text=text)
        except Exception as exc:
            log.warning("slack: could not answer %s: %s", user, self._safe(exc))

    def _on_submit(self, ack: Any, body: dict[str, Any], view: dict[str, Any]) -> None:
        pipeline, channel, params, errors = forms.read_submission(self.store, self.settings, view)
        if errors:
            ack(response_action="errors", errors=errors)
            return
        ack()
        self.handle(
            event_key=f"view:{view.get('id')}:{body.get('trigger_id') or new_id()}",
            slack_user=str((body.get("user") or {}).get("id") or ""),
            channel=channel,
            thread_ts=None,
            text=f"run {pipeline} (launch form)",
            command=Command("run", [pipeline], params, "launch form"),
        )


def dispatch(
    bot: SlackBot, body: str, headers: dict[str, str | Sequence[str]], query: str
) -> BoltResponse:
    """Hand one request to Bolt (verification, routing, the listener)."""
    from slack_bolt.request import BoltRequest

    return bot.app.dispatch(BoltRequest(body=body, query=query, headers=headers))

"""Posting one callback: a signed webhook (httpx) or a Slack message
(slack_sdk), through the clients of ``ferryman.http``, made on first use
(nothing of httpx or slack_sdk is imported at start-up).

Webhooks are always signed (Standard Webhooks, ``ferryman.notify.signing``),
with a fresh timestamp per attempt and the row id as ``webhook-id``. A
failed answer's first bytes are kept (``last_error``) only when it came from
a public address (``ferryman.http.answer_shown``: never an internal
service's error page); errors that cannot heal (malformed target, Slack
``channel_not_found`` …) are permanent.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ferryman.http import (
    DestinationPolicy,
    Failure,
    Timeouts,
    answer_shown,
    describe,
    redact_url,
    response_excerpt,
)
from ferryman.notify.report import slack_text
from ferryman.notify.signing import signed_headers
from ferryman.settings import Settings

if TYPE_CHECKING:
    import httpx
    from slack_sdk import WebClient

log = logging.getLogger(__name__)
_RESPONSE_SNIPPET = 300  # bytes of a failed response body kept in last_error


@dataclass(frozen=True)
class Claimed:
    """One claimed attempt of one callback."""

    id: str
    run_id: str
    kind: str
    target: dict[str, Any]
    attempts: int  # including this one
    created_at: dt.datetime | None = None  # queued (the run ended): the age counts from it


@dataclass
class Outcome:
    """What one attempt came to."""

    ok: bool
    status: int | None = None
    error: str | None = None
    retry_after: float | None = None
    permanent: bool = False

    @classmethod
    def failed(cls, f: Failure, prefix: str = "") -> Outcome:
        return cls(False, f.status, prefix + f.error, f.retry_after, permanent=not f.retryable)


class CallbackPoster:
    """Posts callbacks for one sender: its clients, made on first use, are
    shared by the sender's threads."""

    def __init__(
        self,
        settings: Settings,
        *,
        key: bytes,
        policy: DestinationPolicy,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self._key = key  # the signing key; never logged
        self._policy = policy
        self._transport = transport
        self._http: httpx.Client | None = None
        self._slack: WebClient | None = None
        self._clients_lock = threading.Lock()

    def post(self, c: Claimed, report: dict[str, Any], attachment: str | None = None) -> Outcome:
        """Post ``report`` to ``c``'s target (a webhook or a Slack channel);
        ``attachment`` (a failed step's log) is uploaded to the Slack thread."""
        if c.kind == "webhook":
            return self._post_webhook(c, report)
        return self._post_slack(c, report, attachment)

    def close(self) -> None:
        with self._clients_lock:
            if self._http is not None:
                self._http.close()

    def _post_webhook(self, c: Claimed, report: dict[str, Any]) -> Outcome:
        from ferryman.http.sync import ERRORS, peer_address, read_start

        url = c.target.get("url")
        if not isinstance(url, str) or not url:
            return Outcome(False, error="callback target has no url", permanent=True)
        body = json.dumps(report, separators=(",", ":")).encode()
        headers = {
            "content-type": "application/json",
            **signed_headers(self._key, c.id, body),  # a fresh timestamp per attempt
        }
        try:
            with self._http_client().stream("POST", url, content=body, headers=headers) as resp:
                if 200 <= resp.status_code < 300:
                    return Outcome(True, resp.status_code)
                failure = describe(resp.status_code, headers=resp.headers)
                snippet = None
                if answer_shown(resp.status_code, peer_address(resp)):
                    start = read_start(resp, _RESPONSE_SNIPPET)
                    snippet = response_excerpt(start, _RESPONSE_SNIPPET)
        except ERRORS as exc:
            return Outcome.failed(describe(exc, timeout=self.settings.callbacks.timeout))
        if snippet:
            failure = failure._replace(error=f"{failure.error}: {snippet}")
        return Outcome.failed(failure)

    def _post_slack(
        self, c: Claimed, report: dict[str, Any], attachment: str | None = None
    ) -> Outcome:
        channel = c.target.get("channel")
        if not isinstance(channel, str) or not channel:
            return Outcome(False, error="callback target has no slack channel", permanent=True)
        if self.settings.slack.bot_token is None:
            return Outcome(False, error="FERRYMAN_SLACK_BOT_TOKEN is not set")
        thread = c.target.get("thread")
        try:
            resp = self._slack_client().chat_postMessage(
                channel=channel,
                thread_ts=thread if isinstance(thread, str) and thread else None,
                text=slack_text(report),
                unfurl_links=False,
                unfurl_media=False,
            )
        except Exception as exc:  # Slack's error answers, network errors (urllib), timeouts
            token = self.settings.slack.bot_token.get_secret_value()
            failure = describe(exc, timeout=self.settings.callbacks.timeout, secrets=[token])
            return Outcome.failed(failure, "slack: ")
        if attachment:
            self._upload_log(c, report, attachment, thread)
        return Outcome(True, resp.status_code)

    def _upload_log(self, c: Claimed, report: dict[str, Any], text: str, thread: Any) -> None:
        """Attach a failed step's log to the thread (the current upload API:
        files.getUploadURLExternal, the upload, files.completeUploadExternal).
        Best effort: the message is delivered, a failed upload is logged and
        not retried (a retry would post the message again)."""
        d = report["data"]
        name = f"{d['pipeline']}-{str(d['run_id'])[:12]}-{d.get('failed_step') or 'run'}.log"
        try:
            self._slack_client().files_upload_v2(
                channel=str(c.target["channel"]),
                thread_ts=thread if isinstance(thread, str) and thread else None,
                content=text,
                filename=name,
                title=f"log of step {d.get('failed_step')}",
            )
        except Exception as exc:
            token = self.settings.slack.bot_token
            secrets = [token.get_secret_value()] if token else []
            failure = describe(exc, timeout=self.settings.callbacks.timeout, secrets=secrets)
            log.warning("callback %s: could not attach the log: %s", c.id, failure.error)

    # -- clients (created on first use: nothing of httpx/slack_sdk at start-up) ----

    def _http_client(self) -> httpx.Client:
        from ferryman.http.sync import sync_client

        with self._clients_lock:
            if self._http is None:
                self._http = sync_client(
                    Timeouts.per_phase(self.settings.callbacks.timeout),
                    policy=self._policy,
                    transport=self._transport,
                )
            return self._http

    def _slack_client(self) -> WebClient:
        from ferryman.http.slack import slack_client

        with self._clients_lock:
            if self._slack is None:
                token = self.settings.slack.bot_token
                assert token is not None
                self._slack = slack_client(
                    token.get_secret_value(),
                    base_url=self.settings.slack.api_url,
                    timeout=self.settings.callbacks.timeout,
                    policy=self._policy,
                )
            return self._slack


def describe_target(c: Claimed) -> str:
    """Where a callback goes, safe to log: the webhook URL's origin (its path or
    query may hold a token), or the Slack channel."""
    if c.kind == "slack":
        return f"slack {c.target.get('channel')}"
    return f"webhook {redact_url(str(c.target.get('url', '')))}"

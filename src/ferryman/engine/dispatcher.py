"""The dispatcher: delivers run-completion callbacks (webhooks and Slack).

Callbacks are rows of the ``callbacks`` table, inserted in the same
transaction as the run's final state (``services/callbacks.py``), so a crash
or restart never loses one. This loop claims the rows that are due and
delivers each in a thread pool, so a slow or dead receiver only ever holds
one slot, for at most its timeouts.

Claiming is a lease: one write transaction bumps ``attempts`` and pushes
``next_attempt_at`` to ``now + lease`` (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), so two dispatchers — threads,
processes or machines — never post the same attempt at once. If this
process dies mid-attempt, the lease runs out and another dispatcher retries:
delivery is *at-least-once*, and every attempt carries the same
``webhook-id`` (the row id) for the receiver to de-duplicate. The lease
covers the request's connect, write, read and pool timeouts; a receiver that
dribbles its response slower than that may see a duplicate.

Outcomes: a 2xx (Slack: ``ok``) marks the row ``delivered``; anything else
is retried with exponential backoff and jitter (``callback_backoff`` …
``callback_max_backoff``), or after the delay a 429/503 asks for in
``Retry-After`` (capped at ``callback_max_backoff``), until
``callback_max_attempts`` attempts, then the row is ``dead`` (its
``last_error`` says why). Errors that cannot heal (unknown run, malformed
target, Slack ``channel_not_found`` …) go to ``dead`` at once. Every attempt
records ``attempts``, ``last_status`` and ``last_error``, and is logged
(without URLs' paths or secrets). Nothing a receiver or the database does
can end the loop: every error is recorded, logged and retried.

Webhooks are always signed (Standard Webhooks, ``ferryman.notify.signing``):
with ``FERRYMAN_WEBHOOK_SECRET``, or with the per-install secret generated
under ``FERRYMAN_HOME/webhook_secret``.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import logging
import math
import os
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import sqlalchemy as sa

from ferryman.domain.retry import RetryPolicy
from ferryman.errors import NotFound
from ferryman.notify.report import build_report, excerpt, slack_text
from ferryman.notify.signing import load_or_create_secret, secret_key, signed_headers
from ferryman.settings import Settings
from ferryman.store.engine import CALLBACK_CHANNEL, Store
from ferryman.store.tables import callbacks, utcnow

if TYPE_CHECKING:
    import httpx
    from slack_sdk import WebClient

log = logging.getLogger(__name__)

PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"
# Slack answers that no retry can fix: the callback is dead at once.
SLACK_PERMANENT = frozenset(
    {
        "account_inactive",
        "channel_not_found",
        "invalid_arguments",
        "invalid_auth",
        "is_archived",
        "missing_scope",
        "msg_too_long",
        "no_permission",
        "no_text",
        "not_authed",
        "not_in_channel",
        "restricted_action",
        "token_revoked",
    }
)
_RESPONSE_SNIPPET = 300  # bytes of a failed response body kept in last_error
# A wake-up can arrive before the transaction that caused it has committed
# (``Store.notify`` sets the in-process event inside the transaction), so a
# wake-up that finds nothing is followed by a couple of quick second looks.
_RECHECKS = (0.05, 0.3)
_MIN_TURN_INTERVAL = 0.01  # wake-up storms (a busy worker) cost one cheap read per 10 ms


@dataclass(frozen=True)
class Claimed:
    """One claimed attempt of one callback."""

    id: str
    run_id: str
    kind: str
    target: dict[str, Any]
    attempts: int  # including this one


@dataclass
class Outcome:
    """What one attempt came to."""

    ok: bool
    status: int | None = None
    error: str | None = None
    retry_after: float | None = None
    permanent: bool = False


class Dispatcher:
    """Claims due callbacks and delivers them until stopped.

    ``run()`` serves until ``stop()``; ``run_until_idle(timeout)`` serves
    until no callback is pending or in flight (tests, drain mode).
    """

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        concurrency: int = 16,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.concurrency = concurrency
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        secret, _ = load_or_create_secret(settings)
        self._key = secret_key(secret)  # only the key is kept; it is never logged
        self._transport = transport
        self._policy = RetryPolicy(
            retries=max(settings.callback_max_attempts - 1, 0),
            delay=settings.callback_backoff,
            backoff=2.0,
            jitter=0.2,
            max_delay=settings.callback_max_backoff,
        )
        # Connect + write + read + pool timeouts, plus slack: see the module docstring.
        self.lease_seconds = 4 * settings.callback_timeout + 5.0
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="ferryman-callback")
        self._lock = threading.Lock()
        self._inflight: set[str] = set()
        self._wake = store.subscribe(CALLBACK_CHANNEL)
        self._stop = threading.Event()
        self._listener: threading.Thread | None = None
        self._next_due: float | None = None
        self._rechecks: list[float] = []
        self._http: httpx.Client | None = None
        self._slack: WebClient | None = None
        self._clients_lock = threading.Lock()
        self.delivered_total = 0
        self.attempts_total = 0

    # -- lifecycle ----------------------------------------------------------

    def run(self) -> None:
        """Deliver until ``stop()`` is called."""
        self.start_listener()
        try:
            while not self._stop.is_set():
                self._safe_turn()
                self._sleep()
        finally:
            self._shutdown()

    def run_until_idle(self, timeout: float = 30.0) -> None:
        """Deliver until nothing is pending or in flight; ``TimeoutError`` after ``timeout``."""
        self.start_listener()
        deadline = time.monotonic() + timeout
        try:
            while not self._stop.is_set():
                self._safe_turn()
                with self._lock:
                    busy = bool(self._inflight)
                if not busy and not self._pending():
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"callbacks still pending after {timeout:g}s")
                self._sleep(max_wait=max(deadline - time.monotonic(), 0.01))
        finally:
            self._shutdown()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def start_listener(self) -> None:
        """On PostgreSQL, LISTEN for wake-ups from other processes."""
        if not self.store.is_postgres or self._listener is not None:
            return
        self._listener = threading.Thread(
            target=self._listen, name="ferryman-callback-listen", daemon=True
        )
        self._listener.start()

    def _listen(self) -> None:
        import psycopg

        url = self.store.url.set(drivername="postgresql").render_as_string(hide_password=False)
        while not self._stop.is_set():
            try:
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CALLBACK_CHANNEL}")
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=1.0):
                            self._wake.set()
            except psycopg.Error as exc:  # reconnect after a database hiccup
                log.warning("callback LISTEN connection lost (%s); reconnecting", exc)
                self._stop.wait(1.0)

    def _sleep(self, max_wait: float | None = None) -> None:
        # Clear first, then decide: a wake-up arriving in between is never lost.
        self._wake.clear()
        now = time.monotonic()
        wait = self.settings.poll_seconds
        if max_wait is not None:
            wait = min(wait, max_wait)
        with self._lock:
            full = len(self._inflight) >= self.concurrency
        if self._next_due is not None and not full:
            wait = min(wait, self._next_due - now)
        self._rechecks = [t for t in self._rechecks if t > now]
        if self._rechecks:
            wait = min(wait, self._rechecks[0] - now)
        woke = self._wake.wait(max(wait, _MIN_TURN_INTERVAL)) if wait > 0 else False
        if woke:
            if not self._rechecks:
                t = time.monotonic()
                self._rechecks = [t + d for d in _RECHECKS]
            self._stop.wait(_MIN_TURN_INTERVAL)

    def _shutdown(self) -> None:
        """Let in-flight deliveries finish (bounded); what does not finish stays
        leased and is retried by the next dispatcher once the lease runs out."""
        self._stop.set()
        end = time.monotonic() + max(self.settings.grace_seconds, 0.1)
        while time.monotonic() < end:
            with self._lock:
                if not self._inflight:
                    break
            self._wake.wait(0.05)
            self._wake.clear()
        with self._lock:
            left = len(self._inflight)
        if left:
            log.warning("%d callback(s) still in flight at shutdown; they will be retried", left)
        self.store.unsubscribe(self._wake)
        if self._listener is not None:
            self._listener.join(3)
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._clients_lock:
            if self._http is not None and not left:
                self._http.close()

    # -- one turn ---------------------------------------------------------------

    def _safe_turn(self) -> int:
        try:
            return self.turn()
        except Exception as exc:  # the database is down, or a bug: never end the loop
            log.error("callback dispatcher turn failed: %s: %s", type(exc).__name__, exc)
            self._next_due = time.monotonic() + min(self.settings.poll_seconds, 1.0)
            return 0

    def turn(self) -> int:
        """Claim what is due (as many as there are free slots) and start delivering it."""
        with self._lock:
            free = self.concurrency - len(self._inflight)
            busy = sorted(self._inflight)
        if free <= 0:
            return 0
        # A cheap read first: on SQLite a claim is a write transaction, which
        # must not be taken on every wake-up of a busy worker.
        with self.store.read() as conn:
            q = sa.select(sa.func.min(callbacks.c.next_attempt_at)).where(
                callbacks.c.state == PENDING
            )
            if busy:
                q = q.where(callbacks.c.id.notin_(busy))
            first = conn.execute(q).scalar()
        now = utcnow()
        if not isinstance(first, dt.datetime):
            self._next_due = None
            return 0
        if first > now:
            self._next_due = time.monotonic() + (first - now).total_seconds()
            return 0
        claimed = self._claim(free, busy)
        self._next_due = None if claimed else time.monotonic() + self.settings.poll_seconds
        for c in claimed:
            with self._lock:
                self._inflight.add(c.id)
            self._pool.submit(self._deliver, c)
        return len(claimed)

    def _claim(self, limit: int, busy: list[str]) -> list[Claimed]:
        now = utcnow()
        lease_until = now + dt.timedelta(seconds=self.lease_seconds)
        due = (
            sa.select(callbacks.c.id)
            .where(callbacks.c.state == PENDING, callbacks.c.next_attempt_at <= now)
            .order_by(callbacks.c.next_attempt_at, callbacks.c.id)
            .limit(limit)
        )
        if busy:  # our own attempt whose lease ran out is not claimed twice
            due = due.where(callbacks.c.id.notin_(busy))
        if self.store.is_postgres:
            due = due.with_for_update(skip_locked=True)
        # Two statements, not ``UPDATE … WHERE id IN (SELECT … LIMIT n FOR UPDATE
        # SKIP LOCKED)``: PostgreSQL may run that subquery as the inner side of a
        # nested-loop semi-join, re-scanning it per outer row; each re-scan skips
        # the rows this very statement has just updated and locks the next ones,
        # so far more than ``n`` rows get claimed.
        stmt = (
            sa.update(callbacks)
            .where(
                callbacks.c.id.in_(sa.bindparam("ids", expanding=True)),
                # belt and braces: on SQLite (no row locks) BEGIN IMMEDIATE
                # already serialises claims; the guard keeps a claim honest anyway
                callbacks.c.state == PENDING,
                callbacks.c.next_attempt_at <= now,
            )
            .values(attempts=callbacks.c.attempts + 1, next_attempt_at=lease_until)
            .returning(
                callbacks.c.id,
                callbacks.c.run_id,
                callbacks.c.kind,
                callbacks.c.target,
                callbacks.c.attempts,
            )
        )
        with self.store.write() as conn:
            ids = list(conn.execute(due).scalars())
            rows = conn.execute(stmt, {"ids": ids}).all() if ids else []
        return [
            Claimed(r.id, r.run_id, r.kind, dict(r.target or {}), int(r.attempts)) for r in rows
        ]

    def _pending(self) -> bool:
        with self.store.read() as conn:
            return (
                conn.execute(
                    sa.select(callbacks.c.id).where(callbacks.c.state == PENDING).limit(1)
                ).first()
                is not None
            )

    # -- one attempt (pool thread) ------------------------------------------------

    def _deliver(self, c: Claimed) -> None:
        started = time.monotonic()
        try:
            outcome = self._attempt(c)
        except Exception as exc:  # a bug must not lose the callback: retry it
            log.exception("callback %s: attempt %d crashed", c.id, c.attempts)
            outcome = Outcome(False, error=f"internal error: {type(exc).__name__}: {exc}")
        latency = time.monotonic() - started
        try:
            self._record(c, outcome, latency)
        except Exception as exc:  # the row stays leased and is retried after the lease
            log.error(
                "callback %s: could not record attempt %d (%s: %s); it will be retried",
                c.id,
                c.attempts,
                type(exc).__name__,
                exc,
            )
        finally:
            with self._lock:
                self._inflight.discard(c.id)
            self._wake.set()

    def _attempt(self, c: Claimed) -> Outcome:
        if c.kind not in ("webhook", "slack"):
            return Outcome(False, error=f"unknown callback kind {c.kind!r}", permanent=True)
        try:
            with self.store.read() as conn:
                report = build_report(conn, c.run_id, self.settings)
        except NotFound:
            return Outcome(False, error=f"run {c.run_id} no longer exists", permanent=True)
        if c.kind == "webhook":
            return self._post_webhook(c, report)
        return self._post_slack(c, report)

    def _post_webhook(self, c: Claimed, report: dict[str, Any]) -> Outcome:
        import httpx

        url = c.target.get("url")
        if not isinstance(url, str) or not url:
            return Outcome(False, error="callback target has no url", permanent=True)
        body = json.dumps(report, separators=(",", ":")).encode()
        headers = {
            "content-type": "application/json",
            "user-agent": _user_agent(),
            **signed_headers(self._key, c.id, body),  # a fresh timestamp per attempt
        }
        try:
            with self._client().stream("POST", url, content=body, headers=headers) as resp:
                status = resp.status_code
                if 200 <= status < 300:
                    return Outcome(True, status)
                snippet = _read_some(resp)
                retry_after = (
                    _retry_after(resp.headers.get("retry-after")) if status in (429, 503) else None
                )
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            return Outcome(False, error=f"invalid webhook url: {exc}", permanent=True)
        except httpx.TimeoutException as exc:
            what = type(exc).__name__
            return Outcome(False, error=f"timed out after {self.settings.callback_timeout:g}s "
                                        f"({what})")  # fmt: skip
        except httpx.HTTPError as exc:
            return Outcome(False, error=f"{type(exc).__name__}: {exc}")
        error = f"HTTP {status}" + (f": {snippet}" if snippet else "")
        return Outcome(False, status, error, retry_after)

    def _post_slack(self, c: Claimed, report: dict[str, Any]) -> Outcome:
        from slack_sdk.errors import SlackApiError

        channel = c.target.get("channel")
        if not isinstance(channel, str) or not channel:
            return Outcome(False, error="callback target has no slack channel", permanent=True)
        if self.settings.slack_bot_token is None:
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
        except SlackApiError as exc:
            status = getattr(exc.response, "status_code", None)
            code = _slack_error(exc.response)
            retry_after = None
            if status in (429, 503):
                retry_after = _retry_after(_header(exc.response, "retry-after"))
            return Outcome(
                False,
                status,
                f"slack: {code}",
                retry_after,
                permanent=code in SLACK_PERMANENT,
            )
        except Exception as exc:  # network errors (urllib), timeouts
            return Outcome(False, error=f"slack: {type(exc).__name__}: {exc}")
        return Outcome(True, resp.status_code)

    # -- clients (created on first use: nothing of httpx/slack_sdk at start-up) ----

    def _client(self) -> httpx.Client:
        import httpx

        with self._clients_lock:
            if self._http is None:
                _redact_httpx_urls()
                t = self.settings.callback_timeout
                self._http = httpx.Client(
                    timeout=httpx.Timeout(t),
                    follow_redirects=False,
                    transport=self._transport,
                    trust_env=False,
                )
            return self._http

    def _slack_client(self) -> WebClient:
        from slack_sdk import WebClient

        with self._clients_lock:
            if self._slack is None:
                token = self.settings.slack_bot_token
                assert token is not None
                self._slack = WebClient(
                    token=token.get_secret_value(),
                    base_url=self.settings.slack_api_url,
                    timeout=max(1, math.ceil(self.settings.callback_timeout)),
                    retry_handlers=[],  # retries are ours: durable, with backoff
                )
            return self._slack

    # -- recording --------------------------------------------------------------

    def _record(self, c: Claimed, o: Outcome, latency: float) -> None:
        now = utcnow()
        where = [callbacks.c.id == c.id, callbacks.c.state == PENDING]
        values: dict[str, Any] = {"last_status": o.status, "last_error": excerpt(o.error, 2000)}
        delay: float | None = None
        if o.ok:
            # A success counts even if our lease ran out meanwhile (at-least-once).
            values.update(state=DELIVERED, delivered_at=now, last_error=None)
        else:
            # A failure only counts for the attempt we still hold: after a lost
            # lease a newer attempt owns the row.
            where.append(callbacks.c.attempts == c.attempts)
            if o.permanent or c.attempts >= self.settings.callback_max_attempts:
                values["state"] = DEAD
            else:
                delay = self._delay(c.attempts, o.retry_after)
                values["next_attempt_at"] = now + dt.timedelta(seconds=delay)
        with self.store.write() as conn:
            updated = conn.execute(sa.update(callbacks).where(*where).values(**values)).rowcount
        with self._lock:
            self.attempts_total += 1
            self.delivered_total += 1 if o.ok and updated else 0
        target = _describe(c)
        if not updated:
            log.warning(
                "callback %s (%s): the result of attempt %d came too late and was dropped",
                c.id,
                target,
                c.attempts,
            )
            return
        if o.ok:
            log.info(
                "callback %s (%s, run %s) delivered: attempt %d, status %s, %.3fs",
                c.id, target, c.run_id, c.attempts, o.status, latency,
            )  # fmt: skip
        elif delay is None:
            log.error(
                "callback %s (%s, run %s) is dead after %d attempt(s): %s",
                c.id, target, c.run_id, c.attempts, o.error,
            )  # fmt: skip
        else:
            log.warning(
                "callback %s (%s, run %s) attempt %d failed in %.3fs: %s; retry in %.1fs",
                c.id, target, c.run_id, c.attempts, latency, o.error, delay,
            )  # fmt: skip

    def _delay(self, attempts: int, retry_after: float | None) -> float:
        cap = self.settings.callback_max_backoff
        if retry_after is not None:
            return min(max(retry_after, 0.0), cap)  # the receiver said when
        return min(self._policy.delay_after(attempts), cap)


# -- helpers ------------------------------------------------------------------------


class _RedactURLs(logging.Filter):
    """httpx logs each request's full URL at INFO; a webhook URL's path or
    query may hold a token, so only its origin is kept in the record."""

    def filter(self, record: logging.LogRecord) -> bool:
        import httpx

        if isinstance(record.args, tuple) and any(isinstance(a, httpx.URL) for a in record.args):
            record.args = tuple(
                f"{a.scheme}://{a.host}{f':{a.port}' if a.port else ''}/…"
                if isinstance(a, httpx.URL)
                else a
                for a in record.args
            )
        return True


_REDACTOR = _RedactURLs()


def _redact_httpx_urls() -> None:
    logger = logging.getLogger("httpx")
    if _REDACTOR not in logger.filters:
        logger.addFilter(_REDACTOR)


def _user_agent() -> str:
    from ferryman import __version__

    return f"ferryman/{__version__}"


def _read_some(resp: httpx.Response) -> str:
    """The start of a response body (a receiver's reason), without reading it all."""
    got = b""
    try:
        for chunk in resp.iter_bytes():
            got += chunk
            if len(got) >= _RESPONSE_SNIPPET:
                break
    except Exception:  # the body is only a courtesy
        pass
    text = got[:_RESPONSE_SNIPPET].decode("utf-8", "replace").strip()
    return " ".join(text.split())


def _retry_after(value: str | None) -> float | None:
    """``Retry-After``: delay-seconds or an HTTP date; None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        secs = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        secs = (when - utcnow()).total_seconds()
    if not math.isfinite(secs):
        return None
    return max(secs, 0.0)


def _header(response: Any, name: str) -> str | None:
    headers = getattr(response, "headers", None) or {}
    for k, v in dict(headers).items():
        if str(k).lower() == name:
            return str(v[0] if isinstance(v, list) and v else v)
    return None


def _slack_error(response: Any) -> str:
    try:
        return str(response["error"])
    except Exception:
        return "unknown error"


def _describe(c: Claimed) -> str:
    """Where a callback goes, safe to log: scheme and host only (a webhook URL's
    path or query may hold a token), or the Slack channel."""
    if c.kind == "slack":
        return f"slack {c.target.get('channel')}"
    try:
        parts = urlsplit(str(c.target.get("url", "")))
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
        return f"webhook {parts.scheme}://{host}{port}"
    except ValueError:
        return "webhook (malformed url)"

"""A fake Slack Web API: a real HTTP server on loopback that records every call.

Point ``FERRYMAN_SLACK_API_URL`` (setting ``slack_api_url``) at ``fake.api_url``.
It answers the methods ferryman uses (``auth.test``, ``chat.postMessage``,
``chat.update``, ``chat.postEphemeral``, ``views.open``, ``views.update``,
``users.info``, ``files.getUploadURLExternal``, the upload itself and
``files.completeUploadExternal``) and records each call with its decoded
arguments, so tests assert on what a real workspace would have seen. Also
helpers to sign requests the way Slack signs them, with the signing secret.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode


@dataclass
class Call:
    """One recorded call: the API method (or ``upload``), its arguments, the
    raw body and the headers."""

    method: str
    args: dict[str, Any]
    raw: bytes
    headers: dict[str, str]
    answer: dict[str, Any] = field(default_factory=dict)

    def text(self) -> str:
        """Everything Slack received in this call, for leak checks."""
        return self.raw.decode("utf-8", "replace") + json.dumps(self.args)


@dataclass
class FakeSlack:
    """The fake; ``users`` maps Slack user ids to e-mail addresses (``users.info``)."""

    users: dict[str, str] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    bot_user_id: str = "UBOT"
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ts: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def base(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def api_url(self) -> str:
        return f"{self.base}/api/"

    def of(self, method: str) -> list[Call]:
        """The recorded calls of ``method``, in order."""
        with self._lock:
            return [c for c in self.calls if c.method == method]

    def everything(self) -> str:
        """All that was sent to the fake, as one text (leak checks)."""
        with self._lock:
            return "\n".join(c.text() for c in self.calls)

    def wait_for(
        self, method: str, count: int = 1, timeout: float = 30, where: Callable[[Call], bool] = bool
    ) -> list[Call]:
        """Wait until ``count`` calls of ``method`` matching ``where`` were made."""
        deadline = time.monotonic() + timeout
        while True:
            got = [c for c in self.of(method) if where(c)]
            if len(got) >= count:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{len(got)} of {count} {method} calls after {timeout}s; "
                    f"calls: {[c.method for c in self.calls]}; "
                    f"{method}: {[c.args.get('text') for c in self.of(method)]}"
                )
            time.sleep(0.02)

    # -- answers ----------------------------------------------------------------

    def answer(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        if method == "auth.test":
            return {"ok": True, "user_id": self.bot_user_id, "bot_id": "B1", "team_id": "T1"}
        if method in ("chat.postMessage", "chat.postEphemeral"):
            ts = f"{1700000000 + next(self._ts)}.000100"
            return {"ok": True, "channel": args.get("channel"), "ts": ts, "message_ts": ts}
        if method == "chat.update":
            return {"ok": True, "channel": args.get("channel"), "ts": args.get("ts")}
        if method in ("views.open", "views.update"):
            return {"ok": True, "view": {"id": "V1"}}
        if method == "users.info":
            uid = str(args.get("user"))
            if uid not in self.users:
                return {"ok": False, "error": "user_not_found"}
            email = self.users[uid]
            return {"ok": True, "user": {"id": uid, "profile": {"email": email}}}
        if method == "files.getUploadURLExternal":
            fid = f"F{next(self._ts)}"
            return {"ok": True, "upload_url": f"{self.base}/upload/{fid}", "file_id": fid}
        if method == "files.completeUploadExternal":
            files = args.get("files")
            parsed = json.loads(files) if isinstance(files, str) else files
            return {"ok": True, "files": parsed or []}
        return {"ok": False, "error": "unknown_method"}

    def record(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, bytes, str]:
        if path.startswith("/upload/"):
            with self._lock:
                self.calls.append(Call("upload", {"file_id": path.rsplit("/", 1)[1]}, raw, headers))
            return 200, b"OK - 0", "text/plain"
        method = path.removeprefix("/api/").strip("/").split("?")[0]
        ctype = headers.get("content-type", "")
        args: dict[str, Any]
        if "json" in ctype:
            args = json.loads(raw or b"{}")
        else:
            args = dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
        with self._lock:
            answer = self.answer(method, args)
            self.calls.append(Call(method, args, raw, headers, answer))
        return 200, json.dumps(answer).encode(), "application/json"

    # -- server -----------------------------------------------------------------

    def start(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                n = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(n) if n else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, body, ctype = fake.record(self.path, headers, raw)
                self.send_response(status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = _serve
            do_GET = _serve

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@contextmanager
def fake_slack(users: dict[str, str] | None = None) -> Iterator[FakeSlack]:
    """A running fake Slack Web API."""
    fake = FakeSlack(users=dict(users or {}))
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


# -- what Slack sends -------------------------------------------------------------


def sign(secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """Slack's request-signing headers for ``body`` (v0 HMAC-SHA256)."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    base = b"v0:" + ts.encode() + b":" + body
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}


_EVENT_IDS = itertools.count(1)


def mention(
    text: str,
    *,
    user: str = "U1",
    channel: str = "C1",
    ts: str | None = None,
    thread_ts: str | None = None,
    event_id: str | None = None,
    channel_type: str = "channel",
) -> dict[str, Any]:
    """An Events API ``app_mention`` callback (``message.im`` when ``channel_type='im'``)."""
    n = next(_EVENT_IDS)
    event: dict[str, Any] = {
        "type": "message" if channel_type == "im" else "app_mention",
        "user": user,
        "text": text if channel_type == "im" else f"<@UBOT> {text}",
        "channel": channel,
        "channel_type": channel_type,
        "ts": ts or f"{1690000000 + n}.000200",
        "event_ts": ts or f"{1690000000 + n}.000200",
    }
    if thread_ts:
        event["thread_ts"] = thread_ts
    return {
        "token": "unused",
        "team_id": "T1",
        "api_app_id": "A1",
        "type": "event_callback",
        "event_id": event_id or f"Ev{n:08d}{int(time.time() * 1000) % 10**6}",
        "event_time": int(time.time()),
        "event": event,
    }


def slash(text: str, *, user: str = "U1", channel: str = "C1") -> bytes:
    """A ``/ferryman`` slash command body (form-encoded)."""
    n = next(_EVENT_IDS)
    return urlencode(
        {
            "command": "/ferryman",
            "text": text,
            "user_id": user,
            "channel_id": channel,
            "team_id": "T1",
            "trigger_id": f"trig.{n}.{time.time_ns()}",
            "response_url": "http://127.0.0.1:9/unused",
            "api_app_id": "A1",
        }
    ).encode()


def action_body(payload: dict[str, Any]) -> bytes:
    """An interactivity request body (``payload=<json>``, form-encoded)."""
    return urlencode({"payload": json.dumps(payload)}).encode()

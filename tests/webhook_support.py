"""Shared by the callback and subscription tests: a real HTTP receiver on
loopback that answers by plan, signature checks with the ``standardwebhooks``
package (not our code), and small waiting helpers."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol, TypeVar

import pytest
from standardwebhooks.webhooks import Webhook


@dataclass
class Request:
    time: float  # wall clock (compared with event times)
    path: str
    headers: dict[str, str]
    body: bytes
    method: str = "POST"

    def json(self) -> Any:
        return json.loads(self.body)


# What the receiver answers to its n-th request (0-based): (status, headers, body, delay)
Plan = Callable[[int], tuple[int, dict[str, str], bytes, float]]


def always(status: int = 200, body: bytes = b"ok") -> Plan:
    return lambda n: (status, {}, body, 0.0)


def sequence(*answers: tuple[int, dict[str, str], bytes, float]) -> Plan:
    """The given answers in order, then 200s."""
    return lambda n: answers[n] if n < len(answers) else (200, {}, b"ok", 0.0)


def failing_first(n_fail: int, status: int = 503) -> Plan:
    return lambda n: (status, {}, b"down", 0.0) if n < n_fail else (200, {}, b"ok", 0.0)


@dataclass
class Receiver:
    """A threaded HTTP/1.1 server recording every POST; ``release`` ends
    the delays of a plan early (set when stopping)."""

    plan: Plan
    port: int = 0
    requests: list[Request] = field(default_factory=list)
    answered: list[tuple[Request, int]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook?token=s3cr3t-path-token"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                req = Request(
                    time.time(),
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                    self.command,
                )
                with receiver._lock:
                    n = len(receiver.requests)
                    receiver.requests.append(req)
                status, headers, out, delay = receiver.plan(n)
                if delay:
                    receiver.release.wait(delay)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)
                with receiver._lock:
                    receiver.answered.append((req, status))

            # Every method is answered alike (ferryman.http.api_call's tests).
            do_GET = do_PUT = do_PATCH = do_DELETE = do_POST

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that gave up (timeout) is not an error here

        self._server = Server(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def ids(self) -> list[str]:
        """The ``webhook-id`` of every request, in arrival order."""
        return [r.headers["webhook-id"] for r in self.requests]

    def ok_requests(self) -> list[Request]:
        """The requests answered 2xx, in the order they arrived (the order of
        ``answered`` may differ: two connections' handlers race to record)."""
        with self._lock:
            ok = {id(r) for r, status in self.answered if 200 <= status < 300}
            return [r for r in self.requests if id(r) in ok]


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    """Make receivers (``receivers(plan, port=0)``); all stopped at the end."""
    made: list[Receiver] = []

    def make(plan: Plan | None = None, port: int = 0) -> Receiver:
        r = Receiver(plan or always(), port=port).start()
        made.append(r)
        return r

    yield make
    for r in made:
        r.stop()


def verify(secret: str, req: Request) -> dict[str, Any]:
    """The payload, if the Standard Webhooks signature verifies (else it raises)."""
    payload: dict[str, Any] = Webhook(secret).verify(req.body, req.headers)
    return payload


def wait_for(what: str, predicate: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.02)


class _Loop(Protocol):
    def run(self) -> None: ...
    def stop(self) -> None: ...


L = TypeVar("L", bound=_Loop)


@contextmanager
def serving(loop: L) -> Iterator[L]:
    """A loop (callback sender, event deliverer) serving in a thread, as in the server."""
    t = threading.Thread(target=loop.run, name=f"test-{type(loop).__name__.lower()}")
    t.start()
    try:
        yield loop
    finally:
        loop.stop()
        t.join(30)
        assert not t.is_alive()

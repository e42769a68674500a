"""A fake remote job service for the plugin tests: a real HTTP server on
loopback (``ThreadingHTTPServer``), usable in-process or as its own process
(``python tests/remote_fake.py PORT``: the kill -9 and benchmark tests).

API (JSON):

- ``POST /jobs`` body ``{"duration": s, "outcome": "succeeded"|"failed"|"vanish",
  "message": ..., "outputs": ...}``, header ``Idempotency-Key``: creates a job
  (the same key returns the same job: 200 instead of 201);
- ``GET /jobs/<id>``: ``{"id", "state": queued|running|succeeded|failed,
  "message", "outputs"}``; 404 once a ``vanish`` job's time is up;
- ``DELETE /jobs/<id>``: cancels (``state: cancelled``); 404 for an unknown one;
- ``POST /call``: echoes ``{"echo": body, "headers": {...}}``;
- ``GET /stats``: creates, gets, deletes, the calls' times, max in flight.

Faults: ``fail_next`` (that many 503s), ``throttle_next`` (429 with
``Retry-After``), ``error_rate`` (a share of random 500s).
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Job:
    id: str
    key: str | None
    created: float
    duration: float
    outcome: str
    message: str
    outputs: Any
    cancelled: bool = False

    def state(self, now: float) -> str:
        if self.cancelled:
            return "cancelled"
        if now < self.created + min(0.05, self.duration):
            return "queued"
        if now < self.created + self.duration:
            return "running"
        return self.outcome


@dataclass
class RemoteFake:
    """The service's state (the handler reads and changes it under ``lock``)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    jobs: dict[str, Job] = field(default_factory=dict)
    by_key: dict[str, str] = field(default_factory=dict)
    creates: list[float] = field(default_factory=list)
    gets: list[float] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    fail_next: int = 0
    throttle_next: int = 0
    retry_after: float = 0.2
    error_rate: float = 0.0
    max_in_flight: int = 0

    def in_flight(self, now: float) -> int:
        return sum(1 for j in self.jobs.values() if j.state(now) in ("queued", "running"))

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "creates": list(self.creates), "gets": list(self.gets),
                "deletes": list(self.deletes), "jobs": len(self.jobs),
                "max_in_flight": self.max_in_flight,
            }  # fmt: skip


def _handler(fake: RemoteFake) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> Any:
            n = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(n) if n else b""
            return json.loads(raw) if raw else None

        def _fault(self) -> bool:
            with fake.lock:
                if fake.throttle_next > 0:
                    fake.throttle_next -= 1
                    throttle = True
                else:
                    throttle = False
                if not throttle and fake.fail_next > 0:
                    fake.fail_next -= 1
                    fail = True
                else:
                    fail = not throttle and random.random() < fake.error_rate
            if throttle:
                self._send(429, {"error": "slow down"}, {"retry-after": f"{fake.retry_after:g}"})
                return True
            if fail:
                self._send(503, {"error": "try later"})
                return True
            return False

        def do_POST(self) -> None:
            body = self._body()
            if self.path == "/call":
                if self._fault():
                    return
                with fake.lock:
                    fake.calls.append({"body": body, "headers": dict(self.headers)})
                self._send(200, {"echo": body, "auth": self.headers.get("authorization")})
                return
            if self.path != "/jobs":
                self._send(404, {"error": "no such path"})
                return
            if self._fault():
                return
            spec = body or {}
            if not isinstance(spec.get("duration", 0), int | float):
                self._send(400, {"message": "duration must be a number"})
                return
            key = self.headers.get("idempotency-key")
            now = time.time()
            with fake.lock:
                fake.creates.append(now)
                if key and key in fake.by_key:
                    job = fake.jobs[fake.by_key[key]]
                    status = 200
                else:
                    job = Job(
                        uuid.uuid4().hex[:12], key, now, float(spec.get("duration", 0.2)),
                        str(spec.get("outcome", "succeeded")), str(spec.get("message", "")),
                        spec.get("outputs"),
                    )  # fmt: skip
                    fake.jobs[job.id] = job
                    if key:
                        fake.by_key[key] = job.id
                    status = 201
                fake.max_in_flight = max(fake.max_in_flight, fake.in_flight(now))
            self._send(status, {"id": job.id})

        def do_GET(self) -> None:
            if self.path == "/stats":
                self._send(200, fake.stats())
                return
            if not self.path.startswith("/jobs/"):
                self._send(404, {"error": "no such path"})
                return
            if self._fault():
                return
            now = time.time()
            with fake.lock:
                fake.gets.append(now)
                job = fake.jobs.get(self.path.removeprefix("/jobs/"))
                state = job.state(now) if job else None
            if job is None or (job.outcome == "vanish" and state == "vanish"):
                self._send(404, {"error": "no such job"})
                return
            out = {"id": job.id, "state": state, "message": job.message}
            if state == "succeeded":
                out["outputs"] = job.outputs
            self._send(200, out)

        def do_DELETE(self) -> None:
            if self._fault():
                return
            job_id = self.path.removeprefix("/jobs/")
            with fake.lock:
                fake.deletes.append(job_id)
                job = fake.jobs.get(job_id)
                if job is not None:
                    job.cancelled = True
            if job is None:
                self._send(404, {"error": "no such job"})
            else:
                self._send(200, {"id": job_id, "state": "cancelled"})

    return Handler


class RemoteServer:
    """The fake on a loopback port, served by a thread until ``close``."""

    def __init__(self, port: int = 0) -> None:
        self.fake = RemoteFake()
        self.server = ThreadingHTTPServer(("127.0.0.1", port), _handler(self.fake))
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


if __name__ == "__main__":
    srv = RemoteServer(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
    print(srv.url, flush=True)
    threading.Event().wait()

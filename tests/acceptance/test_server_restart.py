"""Acceptance: real ``ferryman server`` processes (SPEC §3, §11 and "Known failures").

The issue's words: *start a real ``ferryman server`` process, create a run
with a webhook_url pointing at a local receiver that is down, kill and
restart the server while the run is in flight, then start the receiver: the
callback arrives and its signature verifies.* Here the server is killed
twice with SIGKILL: once while the run's step is running (the restarted
server's worker recovers it through its expired lease), and once more after
the callback has failed against the dead receiver (the pending callback must
survive that restart too). Then the receiver comes up and the callback
arrives, signed; delivery is at-least-once, so the same ``webhook-id`` may
arrive more than once, but exactly one distinct id arrives.

Also: the server refuses to start in production with the default secret;
the first start prints the generated admin password once (and never logs
it); ``/health`` answers; SIGTERM stops it cleanly.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from standardwebhooks.webhooks import Webhook
from tests.cli_support import free_port

from ferryman.store.engine import Store
from ferryman.store.tables import callbacks, metadata

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux process tools"),
]

ADMIN_PASSWORD = "acceptance-admin-pw"
STEP_SECONDS = 3.0
LEASE_SECONDS = 2.0

PIPELINE = textwrap.dedent(
    """
    import os
    import time
    from pathlib import Path

    from ferryman import pipeline, step


    @step(retries=3, retry_delay=0.2, retry_jitter=0.0)
    def nap(seconds: float, marker: str) -> str:
        with Path(marker).open("a") as f:  # one line per attempt that started
            f.write(f"{os.getpid()}\\n")
        time.sleep(seconds)
        return "rested"


    @pipeline
    def napping(seconds: float = 3.0, marker: str = "/tmp/napping") -> None:
        nap(seconds, marker)
    """
)


# -- helpers --------------------------------------------------------------------


def server_cmd() -> list[str]:
    """``ferryman server`` if the CLI has it registered, else the command alone."""
    from ferryman.cli.app import app

    if "server" in {c.name for c in app.registered_commands}:
        return [sys.executable, "-c", "from ferryman.cli.app import main; main()", "server"]
    return [sys.executable, "-c", "from ferryman.cli.server import main; main()"]


def wait_for(
    what: str, predicate: Callable[[], Any], timeout: float, check: Callable[[], None]
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        check()
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


def http(
    method: str,
    url: str,
    *,
    body: Any = None,
    form: dict[str, str] | None = None,
    token: str | None = None,
    timeout: float = 10,
) -> tuple[int, Any]:
    headers = {}
    data = None
    if form is not None:
        data = urllib.parse.urlencode(form).encode()
        headers["content-type"] = "application/x-www-form-urlencoded"
    elif body is not None:
        data = json.dumps(body).encode()
        headers["content-type"] = "application/json"
    if token:
        headers["authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


@dataclass
class Server:
    """One ``ferryman server`` process with its output in files."""

    env: dict[str, str]
    logdir: Path
    port: int
    n: int = 0
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *args: str) -> Server:
        self.n += 1
        self.started_at = time.monotonic()
        with (
            open(self.logdir / f"server{self.n}.out", "wb") as out,
            open(self.logdir / f"server{self.n}.err", "wb") as err,
        ):
            self.proc = subprocess.Popen(
                [*server_cmd(), *args],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )
        return self

    def out(self) -> str:
        return (self.logdir / f"server{self.n}.out").read_text(errors="replace")

    def err(self) -> str:
        return (self.logdir / f"server{self.n}.err").read_text(errors="replace")

    def check(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            pytest.fail(
                f"server exited with {self.proc.returncode}\n--- stdout ---\n{self.out()}"
                f"\n--- stderr ---\n{self.err()[-3000:]}"
            )

    def wait_healthy(self, timeout: float = 30) -> float:
        def healthy() -> bool:
            try:
                return http("GET", f"{self.url}/health", timeout=1)[0] == 200
            except OSError:
                return False

        wait_for("GET /health", healthy, timeout, self.check)
        return time.monotonic() - self.started_at

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                pytest.fail("the server did not stop on SIGTERM")
        return int(self.proc.returncode)


@pytest.fixture
def server_env(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    made: list[Server] = []

    def make(**extra: str) -> Server:
        home = tmp_path / "home"
        home.mkdir(exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("FERRYMAN_")}
        port = free_port()
        env.update(
            FERRYMAN_HOME=str(home),
            FERRYMAN_PORT=str(port),
            FERRYMAN_LEASE_SECONDS=str(LEASE_SECONDS),
            FERRYMAN_SWEEP_SECONDS="0.5",
            FERRYMAN_POLL_SECONDS="0.5",
            FERRYMAN_GRACE_SECONDS="1",
            FERRYMAN_CALLBACK_TIMEOUT="1",
            FERRYMAN_CALLBACK_BACKOFF="0.3",
            FERRYMAN_CALLBACK_MAX_BACKOFF="1",
            FERRYMAN_CALLBACK_MAX_ATTEMPTS="1000",
            PYTHONUNBUFFERED="1",
        )
        env.update(extra)
        s = Server(env, tmp_path, port)
        made.append(s)
        return s

    yield make
    for s in made:
        if s.proc is not None and s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait(10)


@dataclass
class Receiver:
    """The webhook receiver: records every POST, answers 200."""

    port: int
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        rec = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                rec.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        class Srv(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Srv(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def callback_rows(store: Store) -> list[Any]:
    with store.read() as conn:
        return list(conn.execute(sa.select(callbacks)).all())


# -- the scenario ---------------------------------------------------------


def _kill_restart_then_receiver(
    make: Callable[..., Server], tmp_path: Path, db_url: str, secret: str | None
) -> None:
    extra = {"FERRYMAN_ADMIN_PASSWORD": ADMIN_PASSWORD, "FERRYMAN_DATABASE_URL": db_url}
    if secret is not None:
        extra["FERRYMAN_WEBHOOK_SECRET"] = secret
    srv = make(**extra)
    marker = tmp_path / "attempts.txt"
    pipes = tmp_path / "napping.py"
    pipes.write_text(PIPELINE)
    receiver = Receiver(free_port())  # not started: the receiver is down
    store = Store(db_url)
    try:
        srv.start()
        srv.wait_healthy()

        # -- create the run through the REST API --
        status, tok = http(
            "POST", f"{srv.url}/token", form={"username": "admin", "password": ADMIN_PASSWORD}
        )
        assert status == 200, tok
        token = tok["access_token"]
        from ferryman.dsl.loader import load_pipeline

        spec = load_pipeline(f"{pipes}:napping").model_dump(mode="json")
        status, reg = http(
            "POST", f"{srv.url}/namespaces/default/pipelines", body=spec, token=token
        )
        assert status == 201, reg
        hook = f"http://127.0.0.1:{receiver.port}/hooks/ferryman"
        status, run = http(
            "POST",
            f"{srv.url}/namespaces/default/pipelines/napping/runs",
            body={
                "params": {"seconds": STEP_SECONDS, "marker": str(marker)},
                "webhook_url": hook,
                "labels": {"suite": "acceptance"},
            },
            token=token,
        )
        assert status == 201, run
        run_id = run["id"]

        # -- kill -9 while the step is in flight --
        def step_running() -> bool:
            return marker.exists() and len(marker.read_text().split()) >= 1

        wait_for("the step to start", step_running, 30, srv.check)
        status, mid = http("GET", f"{srv.url}/runs/{run_id}", token=token)
        assert (status, mid["state"]) == (200, "running")
        srv.kill9()

        # -- restart: the step's lease expires, the new worker re-runs it --
        srv.start()
        srv.wait_healthy()

        def ended() -> str | None:
            status, body = http("GET", f"{srv.url}/runs/{run_id}", token=token)
            assert status == 200, body
            state = body["state"]
            return state if state in ("succeeded", "failed", "cancelled") else None

        state = wait_for("the run to end", ended, 60, srv.check)
        assert state == "succeeded", srv.err()[-3000:]
        assert len(marker.read_text().split()) == 2  # the cut attempt, then the recovered one

        # -- the callback fails against the dead receiver, durably recorded --
        def failed_once() -> Any:
            rows = callback_rows(store)
            return rows if rows and rows[0].attempts >= 1 and rows[0].last_error else None

        (row,) = wait_for("a failed callback attempt", failed_once, 30, srv.check)
        assert row.state == "pending" and row.kind == "webhook"
        assert "ConnectError" in row.last_error

        # -- and survives one more kill -9 --
        srv.kill9()
        srv.start()
        srv.wait_healthy()
        receiver.start()

        wait_for("the callback", lambda: receiver.requests, 30, srv.check)
        wait_for(
            "the callback to be recorded delivered",
            lambda: callback_rows(store)[0].state == "delivered",
            30,
            srv.check,
        )
        time.sleep(1.0)  # anything duplicated would have arrived by now
        assert srv.terminate() == 0
    finally:
        receiver.stop()
        store.dispose()

    ids = {h["webhook-id"] for h, _ in receiver.requests}
    assert ids == {row.id}, "exactly one distinct webhook-id (at-least-once, de-duplicable)"
    key = (
        secret
        if secret is not None
        else (Path(srv.env["FERRYMAN_HOME"]) / "webhook_secret").read_text().strip()
    )
    for headers, body in receiver.requests:
        payload = Webhook(key).verify(body, headers)
        assert payload["type"] == "run.succeeded"
        data = payload["data"]
        assert (data["run_id"], data["pipeline"], data["state"]) == (run_id, "napping", "succeeded")
        assert data["labels"]["suite"] == "acceptance"
        assert data["links"]["ui"].endswith(f"/runs/{run_id}")
    assert ADMIN_PASSWORD not in srv.err()


def test_callback_survives_server_kills_and_arrives_signed_sqlite(
    server_env: Callable[..., Server], tmp_path: Path
) -> None:
    """Embedded default: SQLite under FERRYMAN_HOME; the per-install secret."""
    db_url = f"sqlite:///{tmp_path / 'home' / 'ferryman.db'}"
    _kill_restart_then_receiver(server_env, tmp_path, db_url, secret=None)


@pytest.mark.postgres
def test_callback_survives_server_kills_and_arrives_signed_postgres(
    server_env: Callable[..., Server], tmp_path: Path, pg_database: str
) -> None:
    """PostgreSQL (LISTEN/NOTIFY wake-ups, SKIP LOCKED claims); a configured secret."""
    store = Store(pg_database)
    names = ", ".join(t.name for t in reversed(metadata.sorted_tables))
    with store.engine.begin() as c:
        c.exec_driver_sql(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
    store.dispose()
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    _kill_restart_then_receiver(server_env, tmp_path, pg_database, secret=secret)


# -- start-up -----------------------------------------------------------------------


def test_refuses_production_with_the_default_secret(server_env: Callable[..., Server]) -> None:
    srv = server_env(FERRYMAN_ENV="production").start()
    assert srv.proc is not None
    code = srv.proc.wait(30)
    assert code != 0
    err = srv.err()
    assert "FERRYMAN_JWT_SECRET" in err and "production" in err
    assert "Traceback" not in err and "Traceback" not in srv.out()
    assert len(err.strip().splitlines()) <= 3  # one clear message


def test_first_start_prints_the_admin_password_once(server_env: Callable[..., Server]) -> None:
    srv = server_env().start("--log-level", "DEBUG")
    took = srv.wait_healthy()
    print(f"time from launch to /health 200: {took:.2f}s")
    wait_for("the start-up banner", lambda: "listening on" in srv.out(), 10, srv.check)
    out = srv.out()
    lines = [ln.strip() for ln in out.splitlines()]
    i = lines.index(next(ln for ln in lines if "generated password" in ln))
    password = next(ln for ln in lines[i + 1 :] if ln)
    assert len(password) >= 16
    assert out.count(password) == 1
    status, tok = http("POST", f"{srv.url}/token", form={"username": "admin", "password": password})
    assert status == 200 and tok["access_token"]
    assert http("GET", f"{srv.url}/ready")[0] == 200
    assert srv.terminate() == 0
    assert password not in srv.err()  # never logged, even at DEBUG
    assert "stopping" in srv.err()

    srv.start()
    srv.wait_healthy()
    wait_for("the start-up banner", lambda: "listening on" in srv.out(), 10, srv.check)
    assert "password" not in srv.out()  # shown once: not on later starts
    assert srv.terminate() == 0

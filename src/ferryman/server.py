"""``ferryman server``: the REST API plus, in the same process, the loops:
an embedded worker, the callback sender, the event deliverer and the
scheduler (unless ``FERRYMAN_SCHEDULER_ENABLED=false``).

Start-up: refuse production without a strong access-token secret; open the
database (migrating it); make sure access tokens and webhooks can be signed
(the configured secrets, or per-install ones generated under
``FERRYMAN_HOME``, see ``ferryman.home_secrets``); create the first admin
when there is no user yet (its generated password is printed once, to
stdout, and never logged); serve HTTP; once it answers, start the loops,
each under a supervisor (``engine/supervisor.py``) that restarts it after a
crash.

Shutdown on SIGTERM/SIGINT: the listening socket closes at once, the loops
are told to stop, in-flight HTTP requests finish (up to ``grace_seconds``),
the worker lets running steps finish (then stops them), the callback sender
and the event deliverer let in-flight posts finish. A second signal forces
the exit. Nothing the server prints can keep a signal from working: a closed
stdout or stderr (whoever read it went away) is silenced, not an error.

HTTP limits (``FERRYMAN_HTTP_*``): request heads and bodies must arrive in
time (``ferryman.server_protocol``), idle keep-alive connections close, and
past a number of connections and requests at once the server answers 503.

Start-up is kept light (time to the first ``/health`` and idle memory
matter): heavy modules are imported inside ``serve``, the loops (and their
supervisors) are imported and built after HTTP is up, and the callback
sender imports its HTTP and Slack clients on first use.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

from ferryman.settings import Settings

if TYPE_CHECKING:
    from ferryman.engine.supervisor import Runnable, Supervisor

LoopSpec = tuple[str, "Callable[[], Runnable]"]  # a loop's name and its factory

_T = TypeVar("_T")
log = logging.getLogger(__name__)

ADMIN_USERNAME = "admin"


def say(message: str, stream: TextIO) -> None:
    """Print ``message`` for whoever watches, never failing because nobody does:
    a stream that cannot be written (a closed pipe) is pointed at /dev/null, so
    that later writes and the flush at exit do not fail either."""
    try:
        print(message, file=stream, flush=True)
    except (OSError, ValueError):
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, stream.fileno())
            finally:
                os.close(devnull)


class AdminSeed:
    """The first admin's password and its hash, computed in a background thread
    (Argon2 is slow on purpose and releases the GIL) while the server imports
    and builds the API; ``bootstrap_admin`` writes it before HTTP is served."""

    def __init__(self, settings: Settings) -> None:
        from concurrent.futures import ThreadPoolExecutor

        from ferryman.errors import InvalidInput
        from ferryman.services.auth import hash_password, validate_password

        configured = settings.api.admin_password
        self.generated = configured is None
        self.password = configured.get_secret_value() if configured else secrets.token_urlsafe(18)
        try:
            validate_password(self.password)
        except InvalidInput as exc:
            raise ValueError(f"FERRYMAN_ADMIN_PASSWORD: {exc.message}") from None
        pool = ThreadPoolExecutor(1, thread_name_prefix="ferryman-admin-hash")
        self._hash = pool.submit(hash_password, self.password)
        pool.shutdown(wait=False)

    def hashed(self) -> str:
        return self._hash.result()


def seed_admin(store: Any, settings: Settings) -> AdminSeed | None:
    """An ``AdminSeed`` when the database has no user yet, else None."""
    import sqlalchemy as sa

    from ferryman.store.tables import users

    with store.read() as conn:
        if conn.execute(sa.select(users.c.id).limit(1)).first() is not None:
            return None
    return AdminSeed(settings)


def bootstrap_admin(
    store: Any, settings: Settings, out: TextIO | None = None, seed: AdminSeed | None = None
) -> bool:
    """Create the first admin when there is no user at all; True if created.

    The password is ``FERRYMAN_ADMIN_PASSWORD`` or, when unset, generated and
    printed once to ``out`` (stdout) — never logged. Two servers starting at
    once on one database: the second one's insert fails on the unique user
    name (or sees the user in its own transaction) and it creates nothing.
    """
    import sqlalchemy as sa

    from ferryman.errors import Conflict, InvalidInput
    from ferryman.services.auth import Role, create_user
    from ferryman.store.tables import users

    def any_user(conn: Any) -> bool:
        return conn.execute(sa.select(users.c.id).limit(1)).first() is not None

    if seed is None:
        seed = seed_admin(store, settings)
        if seed is None:
            return False
    configured = settings.api.admin_password
    password = seed.password
    try:
        hashed = seed.hashed()  # hashed outside the write transaction
        with store.write() as conn:
            if any_user(conn):
                return False
            create_user(conn, ADMIN_USERNAME, None, Role.ADMIN, password_hash=hashed)
    except InvalidInput as exc:
        raise ValueError(f"FERRYMAN_ADMIN_PASSWORD: {exc.message}") from None
    except (Conflict, sa.exc.IntegrityError):
        return False
    stream = out or sys.stdout
    if configured is None:
        print(
            f"\nferryman: created the first user {ADMIN_USERNAME!r} (role admin) with the "
            f"generated password:\n\n    {password}\n\n"
            "It is shown only this once: log in with it and change it, or set "
            "FERRYMAN_ADMIN_PASSWORD before the first start.\n",
            file=stream,
            flush=True,
        )
    else:
        print(
            f"ferryman: created the first user {ADMIN_USERNAME!r} (role admin) with the "
            "password from FERRYMAN_ADMIN_PASSWORD",
            file=stream,
            flush=True,
        )
    return True


class _Shutdown:
    """Signal handling for the whole of ``serve``: the first SIGTERM/SIGINT
    stops gracefully (HTTP stops accepting, loops are told to stop), a second
    one forces the exit. uvicorn's own handling is switched off: it re-raises
    the signal after its shutdown, which would end the process before the
    loops have finished their in-flight work. It also holds the loops'
    supervisors, started once HTTP answers (``start_loops``)."""

    def __init__(self) -> None:
        self.loops: list[Supervisor] = []
        self.server: Any = None
        self.stopping = False
        self._count = 0
        # Re-entrant: the signal handler runs in the main thread, which may hold it.
        self._lock = threading.RLock()

    def start_loops(self, specs: list[LoopSpec]) -> None:
        """Start each loop under a supervisor, unless a stop came first."""
        from ferryman.engine.supervisor import Supervisor

        with self._lock:
            if self.stopping:
                return
            for name, factory in specs:
                supervisor = Supervisor(name, factory)
                self.loops.append(supervisor)
                supervisor.start()

    def stop_loops(self) -> None:
        """Tell every loop to stop (returns at once); none starts after this."""
        with self._lock:
            self.stopping = True
            loops = list(self.loops)
        for loop in loops:
            loop.stop()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._count += 1
        if self._count > 1:
            if self.server is not None:
                self.server.force_exit = True
            raise SystemExit(128 + signum)
        # The flags first: whatever happens below, this signal stops the server.
        self.stopping = True
        if self.server is not None:
            self.server.should_exit = True
        self.stop_loops()
        say(
            "ferryman server: stopping (finishing in-flight requests, steps and callbacks)…",
            sys.stderr,
        )

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # embedded in a test or another program: the caller stops us
            return
        sigs = (signal.SIGTERM, signal.SIGINT)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in sigs}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def serve(
    settings: Settings,
    *,
    no_worker: bool = False,
    log_level: str = "warning",
    access_log: bool = False,
    out: TextIO | None = None,
) -> None:
    """Run the server until SIGTERM/SIGINT (see the module docstring).

    Raises ``ValueError`` for a configuration that must not serve (production
    with a default secret, a malformed webhook secret, a too-short admin
    password); the CLI turns it into a one-line error.
    """
    stream = out or sys.stdout
    # Start-up allocates many long-lived objects (modules, classes, routes):
    # the cyclic collector would only rescan them. It is back on (and they are
    # frozen out of its passes) before the first request is served.
    gc.disable()
    try:
        _serve(settings, no_worker, log_level, access_log, stream)
    finally:
        gc.enable()


def _serve(
    settings: Settings, no_worker: bool, log_level: str, access_log: bool, stream: TextIO
) -> None:
    settings.check_production()
    if settings.worker.infra_config and not no_worker:
        from ferryman.infra.registry import InfraPool

        InfraPool(settings.worker.infra_config).validate()  # ValueError: refuse to start
    from ferryman.home_secrets import jwt_secret_path, load_or_create_jwt_secret
    from ferryman.notify.signing import load_or_create_secret, secret_path
    from ferryman.store.engine import Store

    _, created = load_or_create_jwt_secret(settings)  # a bad file stops us before we serve
    if created:
        say(
            f"ferryman: generated the secret signing access tokens in "
            f"{jwt_secret_path(settings)} (several servers sharing a database need "
            "FERRYMAN_JWT_SECRET set to one value instead)",
            stream,
        )
    _, created = load_or_create_secret(settings)  # a bad secret stops us before we serve
    if created:
        say(
            f"ferryman: generated a webhook signing secret in {secret_path(settings)} "
            "(receivers verify callbacks with it; set FERRYMAN_WEBHOOK_SECRET to choose one)",
            stream,
        )
    stop = _Shutdown()
    with stop.installed():
        store = Store.from_settings(settings, prepare=False)
        try:
            # The database is prepared (schema, first admin's hash) in a thread
            # while this one imports and builds the API: both are needed before
            # HTTP answers, and the database part mostly waits on I/O.
            db_ready = _in_background("ferryman-db-prepare", lambda: _prepare_db(store, settings))
            # The loops start once HTTP answers (``_serve_http``): importing and
            # building them first would only delay the first /health.
            loops: list[LoopSpec] = []
            if not no_worker:
                loops.append(("worker", lambda: _worker(store, settings)))
            loops.append(("callback sender", lambda: _callback_sender(store, settings)))
            loops.append(("event deliverer", lambda: _event_deliverer(store, settings)))
            if settings.slack.bot_enabled:
                loops.append(("slack updater", lambda: _slack_updater(store, settings)))
            if settings.scheduler.scheduler_enabled:
                loops.append(("scheduler", lambda: _scheduler(store, settings)))
            if not stop.stopping:
                _serve_http(
                    settings, store, stop, log_level, access_log, stream, no_worker, db_ready, loops
                )
        finally:
            # The loops finish their in-flight work (bounded by their grace).
            stop.stop_loops()
            deadline = time.monotonic() + settings.loops.grace_seconds + 10
            for loop in stop.loops:
                if not loop.join(max(deadline - time.monotonic(), 0.1)):
                    log.warning("the %s did not stop in time", loop.name)
            store.dispose()


def _prepare_db(store: Any, settings: Settings) -> AdminSeed | None:
    if settings.database.auto_migrate:
        store.prepare_schema()
    # Runs whose ``ferryman run`` process died end now (the worker's sweeps
    # do it too; this covers ``--no-worker``).
    from ferryman.services.run_leases import end_orphans
    from ferryman.services.runs import RunService

    end_orphans(RunService(store))
    return seed_admin(store, settings)  # its hashing goes on in one more thread


def _in_background(name: str, fn: Callable[[], _T]) -> Future[_T]:
    """Run ``fn`` in a daemon thread; its result (or exception) in a future."""
    future: Future[_T] = Future()

    def run() -> None:
        try:
            future.set_result(fn())
        except BaseException as exc:  # handed to whoever waits on the future
            future.set_exception(exc)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future


def _worker(store: Any, settings: Settings) -> Runnable:
    from ferryman.engine.worker import Worker

    return Worker(store, settings)


def _callback_sender(store: Any, settings: Settings) -> Runnable:
    from ferryman.engine.callback_sender import CallbackSender

    return CallbackSender(store, settings)


def _event_deliverer(store: Any, settings: Settings) -> Runnable:
    from ferryman.engine.event_deliverer import EventDeliverer

    return EventDeliverer(store, settings)


def _slack_updater(store: Any, settings: Settings) -> Runnable:
    from ferryman.slack.updater import RunMessageUpdater

    return RunMessageUpdater(store, settings)


def _scheduler(store: Any, settings: Settings) -> Runnable:
    from ferryman.engine.scheduler import Scheduler

    return Scheduler(store, settings)


def _serve_http(
    settings: Settings,
    store: Any,
    stop: _Shutdown,
    log_level: str,
    access_log: bool,
    out: TextIO,
    no_worker: bool,
    db_ready: Future[AdminSeed | None],
    loops: list[LoopSpec],
) -> None:
    import uvicorn

    from ferryman.api.app import create_app

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield  # signals are ours (_Shutdown)

    app = create_app(settings, store)
    seed = db_ready.result()  # the database's errors surface here, before serving
    if seed is not None:  # the first admin exists before anybody can log in
        bootstrap_admin(store, settings, out, seed)
    gc.freeze()
    gc.enable()
    server = Server(uvicorn_config(app, settings, log_level=log_level, access_log=access_log))
    stop.server = server
    server.should_exit = stop.stopping

    def announce() -> None:
        while not server.started and not server.should_exit:
            time.sleep(0.01)
        if server.started:
            stop.start_loops(loops)
            worker = "off" if no_worker else "on"
            say(
                f"ferryman server listening on http://{settings.api.host}:{settings.api.port} "
                f"(database {store.url.get_backend_name()}, worker {worker}, "
                f"links {settings.base_url})",
                out,
            )

    threading.Thread(target=announce, name="ferryman-announce", daemon=True).start()
    server.run()


def uvicorn_config(
    app: Any, settings: Settings, *, log_level: str = "warning", access_log: bool = False
) -> Any:
    """uvicorn's configuration for ``app``, with the HTTP limits of ``settings``."""
    import uvicorn

    from ferryman.server_protocol import with_deadlines

    return uvicorn.Config(
        app,
        host=settings.api.host,
        port=settings.api.port,
        http=with_deadlines(settings.api.http_header_timeout, settings.api.http_body_timeout),
        log_config=None,  # our logging set-up (stderr) applies to uvicorn's loggers too
        log_level=log_level.lower(),
        access_log=access_log,
        server_header=False,
        ws="none",  # no websocket routes: do not import a websocket library
        timeout_graceful_shutdown=max(int(settings.loops.grace_seconds), 1),
        timeout_keep_alive=settings.api.http_keepalive_timeout,
        limit_concurrency=settings.api.http_max_connections,
        # X-Forwarded-For from these proxies names the client (rates, lockout)
        proxy_headers=True,
        forwarded_allow_ips=settings.api.forwarded_allow_ips,
    )

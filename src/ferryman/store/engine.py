"""The database: engine set-up (SQLite tuning, PostgreSQL wake-ups) and
transactions.

``Store.write()`` opens a write transaction: on SQLite it starts with
``BEGIN IMMEDIATE`` so that two writers never deadlock on a lock upgrade; on
PostgreSQL it is a plain transaction (claims use ``FOR UPDATE SKIP LOCKED``).
``Store.read()`` opens a read-only one (deferred on SQLite, so readers never
block the writer in WAL mode).

Wake-ups: loops ``subscribe`` to channels; ``notify`` wakes the subscribers
of this process once the notifying transaction commits and, on PostgreSQL,
sends ``NOTIFY`` in it, which other processes receive through their store's
one ``LISTEN`` connection (``store/listener.py``).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from ferryman.secret_box import NoKey, SecretBox
from ferryman.settings import Settings
from ferryman.store.locks import MIGRATION_LOCK_KEY
from ferryman.store.tables import BOX_ATTRIBUTE
from ferryman.store.write_lock import FairLock

if TYPE_CHECKING:
    from ferryman.store.listener import Listener

# The newest migration; a unit test checks it against the Alembic scripts.
HEAD_REVISION = "0014"
WAKE_CHANNEL = "ferryman_wake"  # new or ready work for workers
CALLBACK_CHANNEL = "ferryman_callbacks"  # run-completion callbacks queued
DELIVERY_CHANNEL = "ferryman_deliveries"  # subscriber deliveries queued
CANCEL_CHANNEL = "ferryman_cancel"  # a running step was asked to stop
SCHEDULE_CHANNEL = "ferryman_schedules"  # a schedule was created, edited or resumed
_CHANNEL_NAME = re.compile(r"[a-z_][a-z0-9_]*")


# SQLite errors that mean "cannot get at the database now", not "bad statement".
_SQLITE_UNAVAILABLE = ("locked", "busy", "unable to open", "disk i/o", "readonly", "full")


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot be reached or used right now (an
    outage to report as 503 and retry later) rather than a bug.

    PostgreSQL: any operational or interface error (connection refused or
    lost, server shutting down, too many connections); the pool timing out.
    SQLite: a locked, busy, unopenable, read-only or full database.
    """
    if isinstance(exc, sa.exc.TimeoutError):  # no pooled connection came free in time
        return True
    if not isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError):
        return False
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    if type(orig).__module__.startswith("sqlite3"):
        message = str(orig).lower()
        return any(word in message for word in _SQLITE_UNAVAILABLE)
    return True


def describe_unavailable(exc: BaseException) -> str:
    """One short line about an outage (no traceback, no statement, no parameters)."""
    orig = getattr(exc, "orig", None) or exc
    first = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
    return f"{type(orig).__name__}: {first[:300]}"


def private_file(path: Path) -> None:
    """Make ``path`` (an SQLite database) readable by this user only: its
    directory created 0700 when missing, the file (and its ``-wal`` and
    ``-shm`` files, which SQLite creates with the database's mode) 0600.
    Subscription secrets and run parameters live in it."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(FileNotFoundError, PermissionError):
            if p.stat().st_mode & 0o077:
                p.chmod(0o600)


class Store:
    """One database, shared by the services and loops of a process.

    ``secret_box`` seals the secrets stored in it (``Sealed`` columns);
    without one (a store opened from a bare URL), sealed values cannot be
    read or written (``Store.from_settings`` gives the settings' box).
    """

    def __init__(
        self,
        url: str,
        *,
        synchronous: str = "NORMAL",
        pool_size: int = 10,
        secret_box: SecretBox | None = None,
    ) -> None:
        self.url = sa.make_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        self.is_postgres = self.url.get_backend_name() == "postgresql"
        if self.is_postgres and self.url.drivername == "postgresql":
            self.url = self.url.set(drivername="postgresql+psycopg")
        # Never SQL parameters in exception messages: they carry run
        # parameters and secrets, and the messages are logged.
        kwargs: dict[str, Any] = {"hide_parameters": True}
        if self.is_sqlite:
            db = self.url.database
            if db and db != ":memory:" and not db.startswith("file:"):
                private_file(Path(db))
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
            kwargs["pool_size"] = pool_size
            kwargs["poolclass"] = sa.pool.QueuePool
        else:
            kwargs["pool_size"] = pool_size
            kwargs["max_overflow"] = pool_size
            kwargs["pool_pre_ping"] = True
        self.engine: Engine = sa.create_engine(self.url, **kwargs)
        self.secret_box = secret_box or NoKey()
        setattr(self.engine.dialect, BOX_ATTRIBUTE, self.secret_box)
        # Wake-ups: in-process subscribers per channel; PostgreSQL adds
        # LISTEN/NOTIFY for other processes (one listener per store).
        self._subscribers: dict[str, list[Callable[[], None]]] = {}
        self._wakers: dict[str, Callable[[], None]] = {}
        self._listener: Listener | None = None
        self._own_backends: set[int] = set()
        self._lock = threading.Lock()
        self.cancel_generation = 0
        # SQLite: this process's writers wait in line (FIFO), not in SQLite's
        # polling busy handler (``store/write_lock.py``).
        self.write_lock: FairLock | None = FairLock() if self.is_sqlite else None
        if self.is_sqlite:
            self._tune_sqlite(synchronous)
        else:
            self._track_backends()

    @classmethod
    def from_settings(cls, settings: Settings, *, prepare: bool = True) -> Store:
        """The store of ``settings``; with ``prepare`` (the default) its schema
        is brought to head first (when ``FERRYMAN_AUTO_MIGRATE`` allows)."""
        store = cls(
            settings.db_url,
            synchronous=settings.database.sqlite_synchronous,
            secret_box=SecretBox.from_settings(settings),
        )
        if prepare and settings.database.auto_migrate:
            store.prepare_schema()
        return store

    def prepare_schema(self) -> None:
        """Bring the schema to head: create it in an empty database, migrate
        an older one, nothing when it is current."""
        rev = self.schema_revision()
        if rev != HEAD_REVISION and not (rev is None and self.create_schema()):
            from ferryman.store.migrate import upgrade  # imports Alembic: only when needed

            upgrade(self)

    def create_schema(self) -> bool:
        """Create the whole schema in an empty database and stamp it at
        ``HEAD_REVISION``, without Alembic (a first start stays fast).

        Returns False, creating nothing, when the database holds any table:
        then Alembic migrates it. The tables are exactly what the migrations
        create (a unit test compares both). Concurrent first starts are
        serialised (advisory lock on PostgreSQL, the write lock on SQLite).
        """
        from ferryman.store.tables import SEED_ROWS, metadata

        with self.write() as conn:
            if self.is_postgres:
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
            if sa.inspect(conn).get_table_names():
                return False
            metadata.create_all(conn)
            for table, rows in SEED_ROWS:
                conn.execute(sa.insert(table), rows)
            conn.exec_driver_sql(
                "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
                "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
            )
            conn.execute(
                sa.text("INSERT INTO alembic_version (version_num) VALUES (:v)"),
                {"v": HEAD_REVISION},
            )
        return True

    def schema_revision(self) -> str | None:
        """The Alembic revision the database is at (None when not migrated)."""
        try:
            with self.engine.connect() as conn:
                rev = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
        except sa.exc.DBAPIError:
            return None
        return None if rev is None else str(rev)

    def _tune_sqlite(self, synchronous: str) -> None:
        @event.listens_for(self.engine, "connect")
        def _on_connect(dbapi_conn: Any, _rec: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={synchronous}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(self.engine, "begin")
        def _on_begin(conn: Connection) -> None:
            write = conn.get_execution_options().get("ferryman_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    def _track_backends(self) -> None:
        # The server-side ids of this store's own connections. What they
        # NOTIFY has woken this process's subscribers already (after the
        # commit, in ``notify``): the LISTEN connection passes it over, or a
        # loop would take a second, empty turn after each of its own commits.
        @event.listens_for(self.engine, "connect")
        def _on_connect(dbapi_conn: Any, rec: Any) -> None:
            pid = dbapi_conn.info.backend_pid
            rec.info["backend_pid"] = pid
            with self._lock:
                self._own_backends.add(pid)

        @event.listens_for(self.engine, "close")
        def _on_close(_dbapi_conn: Any, rec: Any) -> None:
            pid = rec.info.pop("backend_pid", None)
            with self._lock:
                self._own_backends.discard(pid)

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction; committed on success, rolled back on error.

        On SQLite the process's writers take turns through ``write_lock``
        (first come, first served) before ``BEGIN IMMEDIATE``."""
        lock = self.write_lock
        if lock is None:
            with self._write() as conn:
                yield conn
            return
        lock.acquire()
        try:
            with self._write() as conn:
                yield conn
        finally:
            lock.release()

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            conn = conn.execution_options(ferryman_write=True)
            hooks: list[Callable[[], None]] = []
            conn.info["after_commit"] = hooks
            try:
                with conn.begin():
                    yield conn
            finally:
                conn.info.pop("after_commit", None)
            for hook in hooks:  # only reached when the commit succeeded
                hook()

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only unit of work.

        SQLite: a deferred transaction (one snapshot for all its statements).
        PostgreSQL: autocommit statements, no ``BEGIN``/``COMMIT`` round trips;
        under READ COMMITTED each statement of a transaction sees its own
        snapshot anyway, so nothing is lost. Writing here is a bug (use
        ``write()``): it would not be atomic.
        """
        if self.is_postgres:
            with self.engine.connect() as conn:
                yield conn.execution_options(isolation_level="AUTOCOMMIT")
            return
        with self.engine.connect() as conn, conn.begin():
            yield conn

    def notify(self, conn: Connection | None = None, channel: str = WAKE_CHANNEL) -> None:
        """Wake up the loops subscribed to ``channel`` (workers by default): in
        this process at once, elsewhere via NOTIFY.

        With ``conn``, the NOTIFY is part of that transaction and is delivered
        when it commits, and the in-process wake-up happens after the commit
        (so nobody wakes up before the work is visible). Each loop listens
        only to its own channels: a new run does not wake the callback
        sender, a queued callback does not wake workers.
        """
        if self.is_postgres and conn is not None:
            conn.exec_driver_sql(f"NOTIFY {channel}")
        self._after_commit(conn, self._waker(channel))

    def notify_cancel(self, conn: Connection | None = None) -> None:
        """Tell workers that a running step was asked to stop."""
        self.notify(conn, CANCEL_CHANNEL)

    def wake_local(self) -> None:
        """Wake this process's subscribers of the workers' channel now."""
        self.wake_subscribers(WAKE_CHANNEL)

    def wake_subscribers(self, channel: str) -> None:
        """What a notification on ``channel`` does in this process, whether it
        was sent here or came through ``LISTEN``: every subscriber's wake-up
        is called (and a cancel is counted in ``cancel_generation``)."""
        with self._lock:
            if channel == CANCEL_CHANNEL:
                self.cancel_generation += 1
            wakes = list(self._subscribers.get(channel, ()))
        for wake in wakes:
            wake()

    def _waker(self, channel: str) -> Callable[[], None]:
        # One hook per channel, so a transaction that notifies twice wakes once.
        with self._lock:
            hook = self._wakers.get(channel)
            if hook is None:
                hook = self._wakers[channel] = functools.partial(self.wake_subscribers, channel)
        return hook

    def _after_commit(self, conn: Connection | None, hook: Callable[[], None]) -> None:
        """Run ``hook`` once ``conn``'s transaction has committed (at once without one):
        in-process listeners must not look before the work is visible."""
        hooks = conn.info.get("after_commit") if conn is not None else None
        if hooks is None:
            hook()
        elif hook not in hooks:
            hooks.append(hook)

    def subscribe(self, channels: Iterable[str], wake: Callable[[], None]) -> None:
        """Call ``wake`` whenever this process learns of new work on one of
        ``channels``: from this process at once, from others (PostgreSQL)
        through the store's one ``LISTEN`` connection, shared by every
        subscriber (``store/listener.py``). ``wake`` runs in the notifying
        thread: it must only signal (set an event), never block."""
        channels = list(channels)
        for channel in channels:
            if not _CHANNEL_NAME.fullmatch(channel):
                raise ValueError(f"not a channel name: {channel!r}")
        with self._lock:
            for channel in channels:
                self._subscribers.setdefault(channel, []).append(wake)
            if not self.is_postgres:
                return
            listener = self._listener
            if listener is None:
                from ferryman.store.listener import Listener  # psycopg: PostgreSQL only

                url = self.url.set(drivername="postgresql").render_as_string(hide_password=False)
                listener = self._listener = Listener(url, self._channels, self._notified)
                listener.start()
                return
        listener.changed()

    def unsubscribe(self, wake: Callable[[], None]) -> None:
        """Stop calling ``wake`` (every channel); the ``LISTEN`` connection
        closes with the last subscription."""
        with self._lock:
            for wakes in self._subscribers.values():
                while wake in wakes:
                    wakes.remove(wake)
            self._subscribers = {c: w for c, w in self._subscribers.items() if w}
            listener = self._listener
            if listener is not None and not self._subscribers:
                self._listener = None
                listener.stop()
                return
        if listener is not None:
            listener.changed()

    def _channels(self) -> set[str]:
        with self._lock:
            return set(self._subscribers)

    def _notified(self, channel: str, backend: int | None) -> None:
        """A notification through ``LISTEN`` (``backend``: who sent it)."""
        with self._lock:
            ours = backend in self._own_backends
        if not ours:
            self.wake_subscribers(channel)

    def ping(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
            return True
        except sa.exc.SQLAlchemyError:
            return False

    def dispose(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop(timeout=3.0)
        self.engine.dispose()

"""The PostgreSQL ``LISTEN`` side of a ``Store``'s wake-ups.

One connection and one thread per ``Store`` (not per loop): it ``LISTEN``s on
every channel somebody in this process subscribed to, and turns each
notification into the same in-process wake-up a local ``Store.notify``
causes, so loops never know where a wake-up came from. The channels follow
the subscriptions; the thread stops when the last subscription goes.

Notifications sent by the store's own connections are passed over by the
store (it has woken its subscribers after the commit already).

No wake-up is lost to the connection itself: whenever it starts listening
on a channel (first subscription, and again after a reconnect, when
notifications sent meanwhile are gone) it wakes that channel's subscribers
once, so they look for work they may have missed.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
from collections.abc import Callable

import psycopg

log = logging.getLogger(__name__)

APPLICATION_NAME = "ferryman-listen"  # how the connection shows in pg_stat_activity
_IDLE_CHECK_SECONDS = 30.0
_CONNECT_TIMEOUT = 10  # seconds; an unreachable host must not hold the thread for minutes
_RETRY_FIRST, _RETRY_MAX = 0.5, 5.0


class Listener:
    """A thread holding one ``LISTEN`` connection (see the module docstring).

    ``channels()`` names the channels wanted now (asked again after each
    ``changed()``); ``deliver(channel, backend)`` is called for every
    notification (``backend``: the sending server process) and, once, for
    every channel newly listened to (``backend`` None).
    """

    def __init__(
        self,
        url: str,
        channels: Callable[[], set[str]],
        deliver: Callable[[str, int | None], None],
    ) -> None:
        self._url = url
        self._channels = channels
        self._deliver = deliver
        self._stopped = threading.Event()
        # A byte on this pair interrupts the wait on the connection at once
        # (a new channel, stop) instead of at the next notification.
        self._rx, self._tx = socket.socketpair()
        self._rx.setblocking(False)
        self.thread = threading.Thread(target=self._main, name="ferryman-listen", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def changed(self) -> None:
        """The wanted channels changed: apply them now."""
        with contextlib.suppress(OSError):  # closed: the thread has ended
            self._tx.send(b"x")

    def stop(self, timeout: float = 0.0) -> None:
        """End the thread (its connection closes); wait up to ``timeout`` for it."""
        self._stopped.set()
        self.changed()
        if timeout > 0 and self.thread.ident is not None:
            self.thread.join(timeout)

    def _main(self) -> None:
        delay, lost = _RETRY_FIRST, False
        try:
            while not self._stopped.is_set():
                try:
                    with psycopg.connect(
                        self._url,
                        autocommit=True,
                        application_name=APPLICATION_NAME,
                        connect_timeout=_CONNECT_TIMEOUT,
                    ) as conn:
                        if lost:
                            log.warning("LISTEN connection restored")
                        delay, lost = _RETRY_FIRST, False
                        self._serve(conn)
                except Exception as exc:  # the database, the network, or a bug: go on
                    if not lost:  # one line per outage, not one per attempt
                        log.warning(
                            "LISTEN connection lost (%s: %s); reconnecting",
                            type(exc).__name__,
                            (str(exc).strip().splitlines() or [""])[0][:300],
                        )
                    lost = True
                    self._stopped.wait(delay)
                    delay = min(delay * 2, _RETRY_MAX)
        finally:
            self._rx.close()
            self._tx.close()

    def _serve(self, conn: psycopg.Connection[object]) -> None:
        listening: set[str] = set()
        # selectors (epoll), not select(): a server's descriptors may pass 1024.
        with selectors.DefaultSelector() as sel:
            sel.register(conn.fileno(), selectors.EVENT_READ, "db")
            sel.register(self._rx, selectors.EVENT_READ, "poke")
            while not self._stopped.is_set():
                wanted = self._channels()
                new = wanted - listening
                for channel in sorted(new):
                    conn.execute(f"LISTEN {channel}")
                for channel in sorted(listening - wanted):
                    conn.execute(f"UNLISTEN {channel}")
                listening = wanted
                for channel in sorted(new):
                    self._deliver(channel, None)
                # Notifications that arrived while a statement ran are kept by
                # psycopg, not left on the socket: take them before waiting on it.
                for n in conn.notifies(timeout=0):
                    self._deliver(n.channel, n.pid)
                ready = {key.data for key, _ in sel.select(_IDLE_CHECK_SECONDS)}
                if "poke" in ready:
                    with contextlib.suppress(BlockingIOError):
                        while self._rx.recv(4096):
                            pass
                if not ready:  # a long silence: make sure the connection still works
                    conn.execute("SELECT 1")

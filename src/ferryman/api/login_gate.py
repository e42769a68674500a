"""The way in for ``POST /token``: rates per client address and per username,
and a small pool of its own for password checks.

Argon2 is slow on purpose. Checked in the thread pool every route shares,
60 parallel logins for unknown users once made ``/health`` take 43 s. Here
logins run on ``FERRYMAN_LOGIN_HASH_THREADS`` threads of their own; at most
``FERRYMAN_LOGIN_QUEUE`` more wait for one, and anything beyond is answered
429 with ``Retry-After`` at once, as is a client past its rate (per address,
per username). Other routes never wait for a password check.

The rates are kept in memory, per server process; the lockout of a
(username, address) pair after failures is kept in the database
(``ferryman.services.logins``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from ferryman.services import logins
from ferryman.services.auth import Principal, TooManyAttempts
from ferryman.settings import Settings
from ferryman.store.engine import Store

#: How often (at most) a server forgets login failures idle for a day.
FORGET_EVERY_SECONDS = 3600.0


def client_address(host: str | None) -> str:
    """The key a client is counted under: its IP address, or its IPv6 /64 (one
    host usually holds a whole /64); IPv4-mapped IPv6 counts as IPv4."""
    if not host:
        return "unknown"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class RateLimiter:
    """Token buckets keyed by a string: ``per_minute`` attempts a minute, in
    bursts of up to as many. Thread-safe; memory is bounded by ``max_keys``."""

    def __init__(
        self,
        per_minute: int,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0  # tokens a second
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """How many keys are remembered."""
        return len(self._buckets)

    def _tokens(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (self.capacity, now))
        return min(self.capacity, tokens + (now - at) * self.rate)

    def wait(self, key: str) -> float:
        """0 when ``key`` may go now, else the seconds until it may."""
        with self._lock:
            tokens = self._tokens(key, self._clock())
        return 0.0 if tokens >= 1 else (1 - tokens) / self.rate

    def take(self, key: str) -> None:
        """Spend one attempt of ``key``."""
        with self._lock:
            now = self._clock()
            self._buckets[key] = (self._tokens(key, now) - 1, now)
            if len(self._buckets) > self.max_keys:
                self._forget(now)

    def _forget(self, now: float) -> None:
        # Full buckets carry no information; if that is not enough, the oldest
        # half goes (dicts keep insertion order, refreshed keys move to the end).
        full = [k for k in self._buckets if self._tokens(k, now) >= self.capacity]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) > self.max_keys:
            for key in list(self._buckets)[: len(self._buckets) // 2]:
                del self._buckets[key]


class LoginGate:
    """Rate limits, a bounded queue and a pool of hashing threads in front of
    ``ferryman.services.logins.login``."""

    def __init__(self, settings: Settings) -> None:
        self.policy = logins.LockoutPolicy.from_settings(settings)
        self.per_address = RateLimiter(settings.login.rate_per_address)
        self.per_user = RateLimiter(settings.login.rate_per_user)
        self.threads = settings.login.hash_threads
        self.capacity = self.threads + settings.login.queue
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="ferryman-login")
        self._lock = threading.Lock()
        self._pending = 0
        self._seconds = 0.3  # moving average of one login, for Retry-After
        self._forgotten_at = -FORGET_EVERY_SECONDS

    async def login(self, store: Store, username: str, password: str, address: str) -> Principal:
        """Log in through the gate (429 at once when a rate or the queue is full)."""
        user_key = username[:128]
        wait = max(self.per_address.wait(address), self.per_user.wait(user_key))
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            raise TooManyAttempts(f"too many logins; try again in {seconds}s", seconds)
        with self._lock:
            if self._pending >= self.capacity:
                backlog = self._pending - self.threads + 1
                seconds = max(1, math.ceil(backlog * self._seconds / self.threads))
                raise TooManyAttempts(
                    f"the server is busy checking passwords; try again in {seconds}s", seconds
                )
            self._pending += 1
        self.per_address.take(address)
        self.per_user.take(user_key)
        try:
            future = self._pool.submit(self._run, store, username, password, address)
        except BaseException:
            self._release(0.0)
            raise
        # A job releases its place when it ends. One cancelled before it began
        # (its request was cancelled while it waited) never runs: released here.
        future.add_done_callback(lambda f: self._release(0.0) if f.cancelled() else None)
        return await asyncio.wrap_future(future)

    def _run(self, store: Store, username: str, password: str, address: str) -> Principal:
        started = time.monotonic()
        try:
            if started - self._forgotten_at >= FORGET_EVERY_SECONDS:
                self._forgotten_at = started
                logins.forget_old_failures(store)
            return logins.login(store, username, password, address, self.policy)
        finally:
            self._release(time.monotonic() - started)

    def _release(self, seconds: float) -> None:
        with self._lock:
            self._pending -= 1
            if seconds > 0:
                self._seconds = 0.8 * self._seconds + 0.2 * seconds

    def close(self) -> None:
        """Stop the hashing threads once the logins in flight are done."""
        self._pool.shutdown(wait=False, cancel_futures=True)

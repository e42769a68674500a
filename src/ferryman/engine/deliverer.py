"""The deliverer: posts queued event deliveries to subscribers (SPEC §4).

Deliveries are rows of ``deliveries``, queued in the transaction that writes
their event (``services.fanout.enqueue_deliveries``), so nothing is lost by
a crash or restart. This loop claims due rows, renders each in its
subscriber's format, signs it (Standard Webhooks, the event id as the stable
``webhook-id``) and POSTs it; then it records the attempt.

Why asyncio (one event loop in one thread, one aiohttp session per
subscription, made by ``ferryman.http``): a request waiting on a slow
receiver costs a coroutine, not a thread, so hundreds can be in flight at
once and a hanging subscriber only ever holds its own
``delivery_per_subscriber`` slots (out of ``delivery_concurrency``) and
connections for at most its timeout. aiohttp
rather than httpx here: on this hot path httpx's async stack cost ~3 ms of
CPU per request against ~0.35 ms for aiohttp (C HTTP parser), a tenfold
difference in deliveries per second on a 2-core machine. Database work
(claims, recording results in batches) runs in worker threads so the loop
never blocks on a lock.

Ordering: a delivery is claimed only if no older delivery of the same
(subscription, run) is still pending (in flight or waiting for a retry), so
each subscriber receives the events of a run in order. A dead-lettered
delivery no longer holds back the ones after it. The deliveries queued
behind a claimed one (same subscription and run) are claimed with it as a
chain and posted one after the other; at the first failure the rest are put
back untried, so no attempt is counted for a request never made.

Claiming is a lease (``attempts + 1``, ``next_attempt_at = now + lease``;
``FOR UPDATE SKIP LOCKED`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), so
several deliverers never post the same attempt at once; if this process dies,
the lease runs out and the attempt is made again: delivery is at-least-once,
and every attempt carries the same ``webhook-id``.

Outcomes: 2xx → delivered. 410 Gone → the subscription is disabled (its
pending deliveries wait, and go out if it is enabled again). Anything else →
retried with exponential backoff and jitter, or after ``Retry-After`` (429,
503; capped at ``delivery_max_backoff``), until ``delivery_max_attempts``
attempts or ``delivery_max_age`` seconds since it was queued; then it is
``dead``, listed by the API and CLI, and can be redelivered. Every attempt is
a ``delivery_attempts`` row: status, latency, error, response excerpt.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ferryman.domain.retry import RetryPolicy
from ferryman.http import (
    RESPONSE_EXCERPT,
    Timeouts,
    describe,
    destination_policy,
    response_excerpt,
)
from ferryman.http.pool import ClientPool
from ferryman.notify.formats import FormatContext
from ferryman.notify.webhook import build_request, envelope
from ferryman.services import subscriptions as subs
from ferryman.services.fanout import DEAD, DELIVERED, PENDING, WAITING
from ferryman.services.subscriptions_file import FileError, read_file, reconcile_file
from ferryman.settings import Settings
from ferryman.store.engine import DELIVERY_CHANNEL, Store
from ferryman.store.tables import (
    deliveries,
    delivery_attempts,
    events,
    subscriptions,
    utcnow,
)

log = logging.getLogger(__name__)

_MIN_TURN = 0.005  # batch completions and wake-ups for at most 5 ms
_FILE_CHECK_SECONDS = 1.0
_WINDOW = 200  # due rows looked at per subscription and claim
_CHAIN = 50  # deliveries of one (subscription, run) claimed together, posted in order
_ANALYZE_SECONDS = 15.0  # PostgreSQL: ANALYZE deliveries at most this often while busy


@dataclass(frozen=True)
class Claimed:
    """One claimed attempt of one delivery, with what is needed to make it."""

    id: int
    subscription_id: str
    run_id: str
    attempts: int  # including this one
    queued_at: dt.datetime
    url: str
    format: str
    secret: str
    headers: dict[str, str]
    event: dict[str, Any] | None  # None: the event is gone
    last: bool = True  # the last of its chain (see ``Deliverer._claim``)


@dataclass
class Result:
    """What one attempt came to."""

    claimed: Claimed
    time: dt.datetime
    latency_ms: float
    status: int | None = None
    error: str | None = None
    response: str | None = None
    retry_after: float | None = None
    permanent: bool = False

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class Deliverer:
    """Claims due deliveries and posts them until stopped.

    ``run()`` serves until ``stop()``; ``run_until_idle(timeout)`` serves
    until no delivery of an enabled subscription is pending (tests, drain).
    """

    def __init__(
        self,
        store: Store,
        settings: Settings,
    ) -> None:
        self.store = store
        self.settings = settings
        self.concurrency = settings.delivery_concurrency
        self.per_subscriber = settings.delivery_per_subscriber
        self.ctx = FormatContext(settings.base_url)
        self.lease_seconds = 2 * settings.delivery_timeout + 10.0
        self._destinations = destination_policy(settings)
        self._policy = RetryPolicy(
            retries=max(settings.delivery_max_attempts - 1, 0),
            delay=settings.delivery_backoff,
            backoff=2.0,
            jitter=0.2,
            max_delay=settings.delivery_max_backoff,
        )
        self._stop = threading.Event()
        self._wake = store.subscribe(DELIVERY_CHANNEL)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._kick: asyncio.Event | None = None
        self._inflight: dict[int, str] = {}  # chain head's delivery id -> subscription id
        self._chain_ids: dict[int, list[int]] = {}  # chain head's id -> every id of the chain
        self._tasks: set[asyncio.Task[None]] = set()
        self._results: list[Result] = []
        self._released: list[Claimed] = []  # claimed, never attempted: back to waiting
        self._next_due: float | None = None
        self._file_sig: tuple[int, int, int] | None = None
        self._file_checked = 0.0
        self._analyzed_at = time.monotonic()
        self.delivered_total = 0
        self.attempts_total = 0

    # -- lifecycle ------------------------------------------------------------------

    def run(self) -> None:
        """Deliver until ``stop()`` is called."""
        asyncio.run(self._main(idle_exit=False, timeout=None))

    def run_until_idle(self, timeout: float = 30.0) -> None:
        """Deliver until nothing is pending; ``TimeoutError`` after ``timeout``."""
        asyncio.run(self._main(idle_exit=True, timeout=timeout))

    def stop(self) -> None:
        """Ask the loop to stop; in-flight attempts get ``grace_seconds`` to finish."""
        self._stop.set()
        self._wake.set()
        self._poke()

    def _poke(self) -> None:
        loop, kick = self._loop, self._kick
        if loop is not None and kick is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(kick.set)

    async def _main(self, *, idle_exit: bool, timeout: float | None) -> None:

        self._loop = asyncio.get_running_loop()
        self._kick = asyncio.Event()
        threads = [threading.Thread(target=self._bridge, name="ferryman-deliver-wake", daemon=True)]
        # Other processes' wake-ups (LISTEN); a drain (tests) relies on this
        # process's own wake-ups and polling.
        if self.store.is_postgres and not idle_exit:
            threads.append(
                threading.Thread(target=self._listen, name="ferryman-deliver-listen", daemon=True)
            )
        for th in threads:
            th.start()
        client = self._clients()
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while not self._stop.is_set():
                await self._safe_turn(client)
                idle = idle_exit and not self._inflight and not self._results and not self._released
                if idle and not await asyncio.to_thread(self._pending):
                    return
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"deliveries still pending after {timeout:g}s")
                await self._sleep()
        finally:
            await self._shutdown(client)
            self.store.unsubscribe(self._wake)
            self._kick = None
            for th in threads:
                await asyncio.to_thread(th.join, 3.0)

    async def _shutdown(self, client: ClientPool) -> None:
        """Let in-flight attempts finish (bounded), record what finished; the
        rest stays leased and is retried once the lease runs out."""
        self._stop.set()
        self._wake.set()
        if self._tasks:
            _, left = await asyncio.wait(
                list(self._tasks), timeout=max(self.settings.grace_seconds, 0.1)
            )
            for task in left:
                task.cancel()
            if left:
                log.warning("%d delivery attempt(s) in flight at shutdown will be retried",
                            len(left))  # fmt: skip
                await asyncio.wait(left, timeout=1.0)
        try:
            await self._record_results()
        except Exception as exc:
            log.error("could not record the last delivery attempts (%s); they will be retried",
                      exc)  # fmt: skip
        await client.aclose()

    def _bridge(self) -> None:
        """Wake-ups of the store (a thread event) become kicks of the loop."""
        while not self._stop.is_set():
            if self._wake.wait(1.0):
                self._wake.clear()
                self._poke()

    def _listen(self) -> None:
        import psycopg

        url = self.store.url.set(drivername="postgresql").render_as_string(hide_password=False)
        while not self._stop.is_set():
            try:
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {DELIVERY_CHANNEL}")
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=1.0):
                            self._wake.set()
            except psycopg.Error as exc:
                log.warning("delivery LISTEN connection lost (%s); reconnecting", exc)
                self._stop.wait(1.0)

    async def _sleep(self) -> None:
        assert self._kick is not None
        wait = self.settings.poll_seconds
        if self._next_due is not None and len(self._inflight) < self.concurrency:
            wait = min(wait, self._next_due - time.monotonic())
        if self.settings.subscriptions_file is not None:
            wait = min(wait, _FILE_CHECK_SECONDS)
        if self._results or self._released:
            wait = 0.0
        if wait > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), wait)
        self._kick.clear()
        await asyncio.sleep(_MIN_TURN)

    # -- one turn ---------------------------------------------------------------------

    async def _safe_turn(self, client: ClientPool) -> None:
        try:
            await self._turn(client)
        except Exception as exc:  # the database is down, or a bug: never end the loop
            log.error("delivery turn failed: %s: %s", type(exc).__name__, exc)
            self._next_due = time.monotonic() + min(self.settings.poll_seconds, 1.0)
            await asyncio.sleep(min(self.settings.poll_seconds, 1.0))

    async def _turn(self, client: ClientPool) -> None:
        await self._check_file()
        await self._record_results()
        free = self.concurrency - len(self._inflight)
        if free <= 0 or self._stop.is_set():
            return
        per_sub = Counter(self._inflight.values())
        busy = [i for ids in self._chain_ids.values() for i in ids]
        chains = await asyncio.to_thread(self._claim, free, dict(per_sub), busy)
        self._next_due = None if chains else time.monotonic() + self.settings.poll_seconds
        for chain in chains:
            head = chain[0]
            self._inflight[head.id] = head.subscription_id
            self._chain_ids[head.id] = [c.id for c in chain]
            task = asyncio.create_task(self._attempt_chain(client, chain))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _claim(self, free: int, per_sub: dict[str, int], busy: list[int]) -> list[list[Claimed]]:
        """Lease up to ``free`` chains, at most ``per_subscriber`` in flight per
        subscription. A chain starts with a due delivery that is the oldest
        pending one of its (subscription, run) and goes on with the deliveries
        queued after it for the same pair (up to ``_CHAIN``), which are posted
        one after the other, in order, on one connection: the events of one
        transaction (a run's creation, a fan-out) go out without waiting for
        a database turn between them.

        Each subscription is looked at through its own window of its oldest
        due rows (an index range scan), so the cost of a claim does not grow
        with the backlog, and a dead subscriber's backlog never hides anybody
        else's deliveries.
        """
        d = deliveries
        p = deliveries.alias("p")
        self._analyze()
        now = utcnow()
        with self.store.read() as conn:
            subs_on = list(
                conn.execute(
                    sa.select(subscriptions.c.id).where(subscriptions.c.enabled.is_(True))
                ).scalars()
            )
        room = {
            sid: self.per_subscriber - per_sub.get(sid, 0)
            for sid in subs_on
            if per_sub.get(sid, 0) < self.per_subscriber
        }
        if not room:
            return []
        # The oldest pending delivery of its (subscription, run) only: ordering.
        head = ~sa.exists().where(
            p.c.subscription_id == d.c.subscription_id,
            p.c.run_id == d.c.run_id,
            p.c.state == PENDING,
            p.c.id < d.c.id,
        )
        # Rendered into the SQL: as a bind parameter, PostgreSQL's generic plan
        # for a prepared statement does not know which subscription's range to
        # scan (seen taking 1-2 s per claim instead of milliseconds).
        sid_param = sa.bindparam("sid", type_=d.c.subscription_id.type, literal_execute=True)
        window = (
            sa.select(d.c.id)
            .where(
                d.c.subscription_id == sid_param, d.c.state == PENDING, d.c.next_attempt_at <= now
            )
            .order_by(d.c.next_attempt_at, d.c.id)
            .limit(_WINDOW)
        )
        q = (
            sa.select(d.c.id)
            .where(d.c.id.in_(window.scalar_subquery()), head)
            .order_by(d.c.next_attempt_at, d.c.id)
            .limit(sa.bindparam("take"))
        )
        if busy:
            q = q.where(d.c.id.notin_(busy))
        if self.store.is_postgres:
            q = q.with_for_update(skip_locked=True, of=d)

        def pick(conn: sa.Connection) -> list[int]:
            picked: list[int] = []
            for sid, n in room.items():
                take = min(n, free - len(picked))
                if take <= 0:
                    break
                picked.extend(conn.execute(q, {"sid": sid, "take": take}).scalars())
            return picked

        if not self.store.is_postgres:
            # SQLite: look in a read transaction first; a claim is a write
            # transaction, not to be taken when there is nothing to claim.
            with self.store.read() as conn:
                if not pick(conn):
                    return []
        lease_until = now + dt.timedelta(seconds=self.lease_seconds)
        with self.store.write() as conn:
            picked = pick(conn)
            if not picked:
                return []
            rows = conn.execute(
                sa.update(d)
                .where(d.c.id.in_(picked), d.c.state == PENDING, d.c.next_attempt_at <= now)
                .values(attempts=d.c.attempts + 1, next_attempt_at=lease_until)
                .returning(
                    d.c.id,
                    d.c.subscription_id,
                    d.c.run_id,
                    d.c.event_id,
                    d.c.attempts,
                    d.c.queued_at,
                )
            ).all()
            if not rows:
                return []
            followers = self._followers(conn, rows, now, lease_until)
            event_ids = {r.event_id for r in rows} | {
                f.event_id for fs in followers.values() for f in fs
            }
            evs = {
                e.id: envelope(e)
                for e in conn.execute(sa.select(events).where(events.c.id.in_(event_ids)))
            }
            sub_rows = {
                x.id: x
                for x in conn.execute(
                    sa.select(subscriptions).where(
                        subscriptions.c.id.in_({r.subscription_id for r in rows})
                    )
                )
            }
        out = []
        for r in sorted(rows, key=lambda r: r.id):
            sub = sub_rows[r.subscription_id]
            members = [r, *followers.get(r.id, ())]
            out.append(
                [
                    Claimed(
                        id=m.id,
                        subscription_id=r.subscription_id,
                        run_id=r.run_id,
                        attempts=int(m.attempts),
                        queued_at=m.queued_at,
                        url=sub.url,
                        format=sub.format,
                        secret=sub.secret,
                        headers=dict(sub.headers or {}),
                        event=evs.get(m.event_id),
                        last=i == len(members) - 1,
                    )
                    for i, m in enumerate(members)
                ]
            )
        return out

    def _followers(
        self,
        conn: sa.Connection,
        heads: Sequence[Any],
        now: dt.datetime,
        lease_until: dt.datetime,
    ) -> dict[int, list[Any]]:
        """Lease the deliveries queued behind each claimed head (same
        subscription and run, in id order, up to ``_CHAIN - 1``): only an
        unbroken run of idle ones (waiting for their turn, or due), so nothing
        is posted out of order and nobody else's lease is taken."""
        d = deliveries
        if _CHAIN <= 1:
            return {}
        head_of = {(r.run_id, r.subscription_id): r.id for r in heads}
        pending = conn.execute(
            sa.select(d.c.id, d.c.run_id, d.c.subscription_id, d.c.next_attempt_at)
            .where(
                sa.tuple_(d.c.run_id, d.c.subscription_id).in_(list(head_of)),
                d.c.state == PENDING,
            )
            .order_by(d.c.id)
        ).all()
        wanted: dict[int, list[int]] = {}
        stopped: set[int] = set()
        for row in pending:
            head = head_of[(row.run_id, row.subscription_id)]
            if row.id <= head or head in stopped:
                continue
            chain = wanted.setdefault(head, [])
            idle = row.next_attempt_at == WAITING or row.next_attempt_at <= now
            if len(chain) >= _CHAIN - 1 or not idle:
                stopped.add(head)  # full, or leased/backing off: nothing after it
                continue
            chain.append(row.id)
        ids = [i for chain in wanted.values() for i in chain]
        if not ids:
            return {}
        leased = {
            r.id: r
            for r in conn.execute(
                sa.update(d)
                .where(
                    d.c.id.in_(ids),
                    d.c.state == PENDING,
                    sa.or_(d.c.next_attempt_at == WAITING, d.c.next_attempt_at <= now),
                )
                .values(attempts=d.c.attempts + 1, next_attempt_at=lease_until)
                .returning(d.c.id, d.c.event_id, d.c.attempts, d.c.queued_at)
            )
        }
        out: dict[int, list[Any]] = {}
        for head, chain in wanted.items():
            got = out.setdefault(head, [])
            for i in chain:
                if i not in leased:
                    break
                got.append(leased[i])
        kept = {r.id for chain in out.values() for r in chain}
        lost = [{"r_id": i, "r_attempts": leased[i].attempts} for i in leased if i not in kept]
        if lost:  # leased behind a gap (changed meanwhile): back to waiting, untried
            self._unlease(conn, lost)
        return out

    @staticmethod
    def _unlease(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
        d = deliveries
        conn.execute(
            sa.update(d)
            .where(
                d.c.id == sa.bindparam("r_id"),
                d.c.state == PENDING,
                d.c.attempts == sa.bindparam("r_attempts"),
            )
            .values(attempts=d.c.attempts - 1, next_attempt_at=WAITING),
            rows,
        )

    def _analyze(self) -> None:
        """Keep PostgreSQL's statistics of ``deliveries`` fresh while busy.

        A burst can grow the table from nothing to 100,000s of rows within a
        minute, long before autovacuum analyzes it; planned on the stale
        statistics, the claim's ordering check probes the wrong index and a
        claim takes seconds instead of milliseconds.
        """
        now = time.monotonic()
        if not self.store.is_postgres or now - self._analyzed_at < _ANALYZE_SECONDS:
            return
        self._analyzed_at = now
        with self.store.write() as conn:
            conn.exec_driver_sql("ANALYZE deliveries")

    def _pending(self) -> bool:
        """Is any delivery of an enabled subscription still pending?"""
        d, s = deliveries, subscriptions
        with self.store.read() as conn:
            q = (
                sa.select(d.c.id)
                .join(s, s.c.id == d.c.subscription_id)
                .where(d.c.state == PENDING, s.c.enabled.is_(True))
                .limit(1)
            )
            return conn.execute(q).first() is not None

    # -- one attempt ------------------------------------------------------------------

    async def _attempt_chain(self, client: ClientPool, chain: list[Claimed]) -> None:
        """Post a chain's deliveries in order; at the first that fails, the
        rest go back to waiting untried (they must not overtake it)."""
        head = chain[0].id
        finished = 0
        failed = False
        try:
            for c in chain:
                if finished and self._stop.is_set():  # shutting down: the rest waits
                    failed = True
                    break
                res = await self._attempt(client, c)
                finished += 1
                self._results.append(res)
                if not res.ok:
                    failed = True
                    break
        finally:
            # The untried: those after a failed one (or from where a shutdown
            # stopped the chain); when cancelled (shutdown's grace is over),
            # those after the one in flight (which stays leased: its outcome
            # is unknown, so it is retried after the lease).
            if failed:
                untried = chain[finished:]
            elif finished < len(chain):
                untried = chain[finished + 1 :]
            else:
                untried = []
            self._released.extend(untried)
            self._inflight.pop(head, None)
            self._chain_ids.pop(head, None)
            if self._kick is not None:
                self._kick.set()

    def _clients(self) -> ClientPool:
        """One aiohttp session per subscription (made on first use)."""
        return ClientPool(
            Timeouts.overall(self.settings.delivery_timeout),
            policy=self._destinations,
            connections=self.per_subscriber,
        )

    async def _attempt(self, client: ClientPool, c: Claimed) -> Result:
        from ferryman.http.aio import ERRORS

        now = utcnow()
        started = time.monotonic()
        res = Result(c, now, 0.0)
        try:
            if c.event is None:
                res.error, res.permanent = "the event no longer exists", True
            else:
                try:
                    body, headers = build_request(
                        secret=c.secret,
                        fmt_name=c.format,
                        extra_headers=c.headers,
                        event=c.event,
                        ctx=self.ctx,
                    )
                except Exception as exc:  # an unknown format, a broken plug-in
                    res.error = f"cannot render the {c.format} format: {type(exc).__name__}: {exc}"
                    res.permanent = True
                else:
                    await self._post(client, c, body, headers, res)
        except asyncio.CancelledError:
            raise
        except ERRORS as exc:
            failure = describe(exc, timeout=self.settings.delivery_timeout)
            res.error, res.permanent = failure.error, not failure.retryable
        except Exception as exc:  # a bug must not lose the delivery: it is retried
            log.exception("delivery %d: attempt %d crashed", c.id, c.attempts)
            res.error = f"internal error: {type(exc).__name__}: {exc}"
        res.latency_ms = round((time.monotonic() - started) * 1000, 2)
        return res

    async def _post(
        self,
        clients: ClientPool,
        c: Claimed,
        body: bytes,
        headers: dict[str, str],
        res: Result,
    ) -> None:
        async with clients.get(c.subscription_id).post(c.url, data=body, headers=headers) as resp:
            res.status = resp.status
            got = await resp.content.read(RESPONSE_EXCERPT * 4)
            res.response = response_excerpt(got)
            if not res.ok:
                failure = describe(resp.status, headers=resp.headers)
                res.error, res.retry_after = failure.error, failure.retry_after

    # -- recording (in a thread, in batches) ----------------------------------------------

    async def _record_results(self) -> None:
        if not self._results and not self._released:
            return
        batch, self._results = self._results, []
        released, self._released = self._released, []
        try:
            await asyncio.to_thread(self._record, batch, released)
        except Exception:
            # Not recorded: the rows stay leased and are retried after the lease.
            log.error("could not record %d delivery attempt(s); they will be retried",
                      len(batch), exc_info=True)  # fmt: skip

    def _record(self, batch: list[Result], released: list[Claimed] | None = None) -> None:
        now = utcnow()
        d = deliveries
        done: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        gone: dict[str, str] = {}
        attempts: list[dict[str, Any]] = []
        ended: list[dict[str, Any]] = []
        for r in batch:
            c = r.claimed
            attempts.append(
                {
                    "delivery_id": c.id,
                    "attempt": c.attempts,
                    "time": r.time,
                    "status": r.status,
                    "latency_ms": r.latency_ms,
                    "error": r.error,
                    "response": r.response,
                }
            )
            if r.ok:
                done.append({"b_id": c.id, "b_status": r.status, "b_at": now})
                if c.last:  # within a chain the next one is ours already (leased)
                    ended.append({"e_id": c.id, "e_sub": c.subscription_id, "e_run": c.run_id})
                continue
            values: dict[str, Any] = {"b_id": c.id, "b_attempts": c.attempts, "b_status": r.status}
            if r.status == 410:
                gone[c.subscription_id] = f"the receiver answered 410 Gone at {now:%Y-%m-%d %H:%M}Z"
                values.update(
                    b_state=PENDING, b_next=now, b_error="HTTP 410 Gone: subscription disabled"
                )
            elif (
                r.permanent
                or c.attempts >= self.settings.delivery_max_attempts
                or (now - c.queued_at).total_seconds() >= self.settings.delivery_max_age
            ):
                values.update(b_state=DEAD, b_next=now, b_error=r.error)
                ended.append({"e_id": c.id, "e_sub": c.subscription_id, "e_run": c.run_id})
            else:
                delay = self._delay(c.attempts, r.retry_after)
                values.update(
                    b_state=PENDING, b_next=now + dt.timedelta(seconds=delay), b_error=r.error
                )
            failed.append(values)
        with self.store.write() as conn:
            if done:
                # A success counts even if our lease ran out meanwhile (at-least-once).
                conn.execute(
                    sa.update(d)
                    .where(d.c.id == sa.bindparam("b_id"), d.c.state == PENDING)
                    .values(
                        state=DELIVERED,
                        delivered_at=sa.bindparam("b_at", type_=d.c.delivered_at.type),
                        last_status=sa.bindparam("b_status"),
                        last_error=None,
                    ),
                    done,
                )
            if failed:
                # A failure only counts for the attempt we still hold.
                conn.execute(
                    sa.update(d)
                    .where(
                        d.c.id == sa.bindparam("b_id"),
                        d.c.state == PENDING,
                        d.c.attempts == sa.bindparam("b_attempts"),
                    )
                    .values(
                        state=sa.bindparam("b_state"),
                        next_attempt_at=sa.bindparam("b_next", type_=d.c.next_attempt_at.type),
                        last_status=sa.bindparam("b_status"),
                        last_error=sa.bindparam("b_error"),
                    ),
                    failed,
                )
            if released:  # claimed behind a failure, never tried: waiting again
                self._unlease(conn, [{"r_id": c.id, "r_attempts": c.attempts} for c in released])
            if ended:
                # The next delivery of each (subscription, run) is due now, if it
                # was waiting (not when it is already due or leased: redelivery).
                p = deliveries.alias("p")
                nxt = (
                    sa.select(sa.func.min(p.c.id))
                    .where(
                        p.c.subscription_id == sa.bindparam("e_sub"),
                        p.c.run_id == sa.bindparam("e_run"),
                        p.c.state == PENDING,
                        p.c.id > sa.bindparam("e_id"),
                    )
                    .scalar_subquery()
                )
                conn.execute(
                    sa.update(d)
                    .where(d.c.id == nxt, d.c.next_attempt_at == WAITING)
                    .values(next_attempt_at=now),
                    ended,
                )
            # A subscription deleted meanwhile took its deliveries along.
            alive = set(
                conn.execute(
                    sa.select(d.c.id).where(d.c.id.in_([a["delivery_id"] for a in attempts]))
                ).scalars()
            )
            attempts = [a for a in attempts if a["delivery_id"] in alive]
            if attempts:
                conn.execute(sa.insert(delivery_attempts), attempts)
            for sid, reason in gone.items():
                subs.disable(conn, sid, reason)
        self.attempts_total += len(batch)
        self.delivered_total += len(done)
        for r in batch:
            self._log(r)
        for sid in gone:
            log.warning("subscription %s disabled: its receiver answered 410 Gone", sid)

    def _log(self, r: Result) -> None:
        c = r.claimed
        if r.ok:
            log.debug("delivery %d delivered: attempt %d, HTTP %s, %.1f ms",
                      c.id, c.attempts, r.status, r.latency_ms)  # fmt: skip
        else:
            log.info("delivery %d (subscription %s) attempt %d failed in %.1f ms: %s",
                     c.id, c.subscription_id, c.attempts, r.latency_ms, r.error)  # fmt: skip

    def _delay(self, attempts: int, retry_after: float | None) -> float:
        cap = self.settings.delivery_max_backoff
        if retry_after is not None:
            return min(max(retry_after, 0.0), cap)
        return min(self._policy.delay_after(attempts), cap)

    # -- the subscriptions file --------------------------------------------------------------

    async def _check_file(self) -> None:
        path = self.settings.subscriptions_file
        if path is None:
            return
        now = time.monotonic()
        if self._file_sig is not None and now - self._file_checked < _FILE_CHECK_SECONDS:
            return
        self._file_checked = now
        try:
            st = os.stat(path)
            sig = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            sig = (0, 0, 0)  # missing: every file subscription goes
        if sig == self._file_sig:
            return
        if sig == (0, 0, 0):
            log.warning("subscriptions file %s not found: no file subscriptions", path)
        try:
            changes = await asyncio.to_thread(self._reload_file, sig)
        except FileError as exc:
            log.error("subscriptions file not applied: %s", exc)
            self._file_sig = sig  # reported once per version of the file
            return
        self._file_sig = sig
        if changes:
            log.warning("subscriptions file %s applied: %s", path, "; ".join(changes))

    def _reload_file(self, sig: tuple[int, int, int]) -> list[str]:
        path = self.settings.subscriptions_file
        assert path is not None
        specs = [] if sig == (0, 0, 0) else read_file(path)
        with self.store.write() as conn:
            return reconcile_file(conn, specs, policy=self._destinations)

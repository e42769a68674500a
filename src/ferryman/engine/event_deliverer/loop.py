"""The event deliverer: posts queued event deliveries to subscribers (SPEC §4).

Each turn records the attempts that ended since the last one (in batches,
``results.py``), claims due deliveries in chains (``queue.py``: ordering,
leases) and starts posting each chain (``posting.py``). It also applies the
subscriptions file (``FERRYMAN_SUBSCRIPTIONS_FILE``) whenever it changes.

Why asyncio (one event loop in the deliverer's thread, the loop base's
``AsyncLoop``): a request waiting on a slow receiver costs a coroutine, not
a thread, so hundreds can be in flight at once and a hanging subscriber only
ever holds its own ``delivery_per_subscriber`` slots (out of
``delivery_concurrency``) for at most its timeout. Database work (claims,
recording) runs in worker threads (``asyncio.to_thread``) so the event loop
never blocks on a lock.

Shutdown: in-flight chains get ``grace_seconds``; then they are cancelled.
A delivery whose request was cut off stays leased (whether it arrived is
unknown) and is retried once the lease runs out; the deliveries behind it in
its chain go back to waiting, untried.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter

from ferryman.engine.clock import Clock
from ferryman.engine.event_deliverer.posting import Poster
from ferryman.engine.event_deliverer.queue import Claimed, DeliveryQueue
from ferryman.engine.event_deliverer.results import Result, Results
from ferryman.engine.loop import AsyncLoop
from ferryman.http import destination_policy
from ferryman.http.pool import ClientPool
from ferryman.notify.formats import FormatContext
from ferryman.services.subscriptions_file import FileError, read_file, reconcile_file
from ferryman.settings import Settings
from ferryman.store.engine import DELIVERY_CHANNEL, Store

log = logging.getLogger(__name__)

_FILE_CHECK_SECONDS = 1.0


class EventDeliverer(AsyncLoop):
    """Claims due deliveries and posts them until stopped.

    ``run()`` serves until ``stop()``; ``run_until_idle(timeout)`` serves
    until no delivery of an enabled subscription is pending (tests, drain).
    """

    name = "event deliverer"
    channels = (DELIVERY_CHANNEL,)
    min_turn_interval = 0.005  # batch completions and wake-ups for at most 5 ms
    abort_seconds = 1.0  # for cancelled chains to put their untried deliveries back

    def __init__(self, store: Store, settings: Settings, *, clock: Clock | None = None) -> None:
        super().__init__(
            store,
            poll_seconds=settings.loops.poll_seconds,
            grace_seconds=max(settings.loops.grace_seconds, 0.1),
            clock=clock,
        )
        self.settings = settings
        self.concurrency = settings.delivery.concurrency
        self._destinations = destination_policy(settings)
        self.queue = DeliveryQueue(store, settings)
        self.results = Results(store, settings)
        self.poster = Poster(
            FormatContext(settings.base_url),
            timeout=settings.delivery.timeout,
            policy=self._destinations,
            per_subscriber=settings.delivery.per_subscriber,
        )
        self._clients: ClientPool | None = None
        self._inflight: dict[int, str] = {}  # chain head's delivery id -> subscription id
        self._chain_ids: dict[int, list[int]] = {}  # chain head's id -> every id of the chain
        self._tasks: set[asyncio.Task[None]] = set()
        self._results: list[Result] = []
        self._released: list[Claimed] = []  # claimed, never attempted: back to waiting
        self._file_sig: tuple[int, int, int] | None = None
        self._file_checked = 0.0

    @property
    def delivered_total(self) -> int:
        return self.results.delivered_total

    @property
    def attempts_total(self) -> int:
        return self.results.attempts_total

    # -- the loop's hooks -------------------------------------------------------------

    async def begin(self) -> None:
        self._clients = self.poster.clients()

    def in_flight(self) -> bool:
        return bool(self._tasks)

    async def idle(self) -> bool:
        """Nothing in flight or to record, and nothing pending for an enabled subscription."""
        if self._inflight or self._results or self._released:
            return False
        return not await asyncio.to_thread(self.queue.pending)

    def next_wait(self) -> float:
        if self._results or self._released:
            return 0.0
        # Full: a chain that ends wakes us; a due delivery has to wait anyway.
        has_room = len(self._inflight) < self.concurrency
        wait = super().next_wait() if has_room else self.poll_seconds
        if self.settings.delivery.subscriptions_file is not None:
            wait = min(wait, _FILE_CHECK_SECONDS)
        return wait

    async def abort(self) -> None:
        for task in self._tasks:
            task.cancel()
        log.warning("%d delivery attempt(s) in flight at shutdown will be retried",
                    len(self._tasks))  # fmt: skip

    async def finish(self) -> None:
        await self._record_results()

    async def release(self) -> None:
        if self._clients is not None:
            await self._clients.aclose()

    # -- one turn ---------------------------------------------------------------------

    async def turn(self) -> None:
        if not self.stopping:
            await self._check_file()
        await self._record_results()
        free = self.concurrency - len(self._inflight)
        if free <= 0 or self.stopping:
            return
        assert self._clients is not None
        per_sub = Counter(self._inflight.values())
        busy = [i for ids in self._chain_ids.values() for i in ids]
        chains = await asyncio.to_thread(self.queue.claim, free, dict(per_sub), busy)
        self.next_due = None if chains else self.clock.monotonic() + self.poll_seconds
        for chain in chains:
            head = chain[0]
            self._inflight[head.id] = head.subscription_id
            self._chain_ids[head.id] = [c.id for c in chain]
            task = asyncio.create_task(self._post_chain(self._clients, chain))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _post_chain(self, clients: ClientPool, chain: list[Claimed]) -> None:
        """Post a chain's deliveries in order; at the first that fails, the
        rest go back to waiting untried (they must not overtake it)."""
        head = chain[0].id
        finished = 0
        failed = False
        try:
            for c in chain:
                if finished and self.stopping:  # shutting down: the rest waits
                    failed = True
                    break
                res = await self.poster.attempt(clients, c)
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
            self.wake()

    async def _record_results(self) -> None:
        if not self._results and not self._released:
            return
        batch, self._results = self._results, []
        released, self._released = self._released, []
        try:
            await asyncio.to_thread(self.results.record, batch, released)
        except Exception:
            # Not recorded: the rows stay leased and are retried after the lease.
            log.error("could not record %d delivery attempt(s); they will be retried",
                      len(batch), exc_info=True)  # fmt: skip

    # -- the subscriptions file ---------------------------------------------------------

    async def _check_file(self) -> None:
        path = self.settings.delivery.subscriptions_file
        if path is None:
            return
        now = self.clock.monotonic()
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
        path = self.settings.delivery.subscriptions_file
        assert path is not None
        specs = [] if sig == (0, 0, 0) else read_file(path)
        with self.store.write() as conn:
            return reconcile_file(conn, specs, policy=self._destinations)

"""The plugins' shared state in the database, on SQLite and PostgreSQL: the
token bucket holds its rate for many takers at once, a quota is never
exceeded and a release counts once, pending deletes and counters."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from ferryman.services.task_state import DbTaskState
from ferryman.store.engine import Store


def test_the_token_bucket_holds_its_rate_for_concurrent_takers(store: Store) -> None:
    state = DbTaskState(store)
    taken: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + 2.0

    def taker() -> None:
        while time.monotonic() < stop:
            wait = state.take_token("b:write", 20.0, 10)
            if wait == 0:
                with lock:
                    taken.append(time.monotonic())
            else:
                assert 0 < wait <= 0.06  # at most one token's worth of time
                time.sleep(wait)

    with ThreadPoolExecutor(6) as pool:
        for _ in range(6):
            pool.submit(taker)
    # 2 s at 20/s plus the burst of 10; the clocks of two hosts are not involved
    assert 30 <= len(taken) <= 10 + 20 * 2.0 + 2, len(taken)


def test_a_quota_is_never_exceeded_and_releases_count_once(store: Store) -> None:
    state = DbTaskState(store)
    held: list[str] = []
    lock = threading.Lock()

    def grab(i: int) -> None:
        ok, in_use = state.quota_acquire("p:ns", 5, f"h{i}")
        assert in_use <= 5
        if ok:
            with lock:
                held.append(f"h{i}")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(grab, range(20)))
    assert len(held) == 5
    assert state.quota_acquire("p:ns", 5, held[0]) == (True, 5)  # a holder keeps its place
    assert state.quota_acquire("p:ns", 5, "late") == (False, 5)
    state.quota_release(held[0])
    state.quota_release(held[0])  # once only
    assert state.quota_acquire("p:ns", 5, "late") == (True, 5)
    assert state.quota_acquire("p:ns", 5, "later") == (False, 5)


def test_resources_deletes_messages_and_counters(store: Store) -> None:
    state = DbTaskState(store)
    state.begin_resource("k1", "http_job", "r" * 32, "s", 1, {"plugin": "http_job"})
    state.begin_resource("k1", "http_job", "r" * 32, "s", 1, {"plugin": "other"})  # kept
    state.save_meta("k1", {"id": "x"})
    stored = state.resource("k1")
    assert stored is not None
    assert (stored.meta, stored.context, stored.done) == (
        {"id": "x"},
        {"plugin": "http_job"},
        False,
    )
    state.note("k1", "waiting for quota p:ns (5 in use of 5)")
    assert state.message("r" * 32, "s") == "waiting for quota p:ns (5 in use of 5)"
    state.request_delete("k1", "cancelled")
    assert [r.key for r in state.pending_deletes(10)] == ["k1"]
    state.finish("k1")
    assert state.pending_deletes(10) == []
    assert state.message("r" * 32, "s") is None
    state.count("http_job", "gets", 3)
    state.count("http_job", "gets", 2)
    assert state.counters() == {"http_job": {"gets": 5}}
    assert state.resource("nope") is None

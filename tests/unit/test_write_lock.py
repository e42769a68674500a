"""The SQLite writers' fair lock (``store/write_lock.py``): first come, first
served, re-entrant, and a waiter that gives up leaves the line."""

from __future__ import annotations

import threading
import time

import pytest
import sqlalchemy as sa

from ferryman.store.write_lock import FairLock


def wait_until(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def test_waiters_get_the_lock_in_the_order_they_asked() -> None:
    lock = FairLock()
    order: list[int] = []
    lock.acquire()

    def writer(i: int) -> None:
        lock.acquire()
        order.append(i)
        time.sleep(0.001)  # hold it a moment: later ones must still wait their turn
        lock.release()

    threads = []
    for i in range(16):
        t = threading.Thread(target=writer, args=(i,))
        t.start()
        threads.append(t)
        wait_until(lambda n=i + 1: lock.waiting == n)  # i is in line before i+1 comes
    lock.release()
    for t in threads:
        t.join(10)
    assert order == list(range(16))


def test_a_newcomer_cannot_take_the_lock_from_the_first_in_line() -> None:
    lock = FairLock()
    got: list[str] = []
    lock.acquire()
    first = threading.Thread(target=lambda: (lock.acquire(), got.append("first"), lock.release()))
    first.start()
    wait_until(lambda: lock.waiting == 1)
    lock.release()  # handed straight to "first", even if it has not run yet
    lock.acquire()  # the releasing thread comes back at once: it must queue behind
    got.append("newcomer")
    lock.release()
    first.join(10)
    assert got == ["first", "newcomer"]


def test_the_lock_is_re_entrant_in_one_thread() -> None:
    lock = FairLock()
    lock.acquire()
    lock.acquire()
    lock.release()
    other = threading.Thread(target=lambda: (lock.acquire(), lock.release()))
    other.start()
    other.join(0.2)
    assert other.is_alive()  # still held once
    lock.release()
    other.join(10)
    assert not other.is_alive()


def test_a_waiter_that_times_out_leaves_the_line() -> None:
    lock = FairLock()
    lock.acquire()
    errors: list[BaseException] = []

    def impatient() -> None:
        try:
            lock.acquire(timeout=0.1)
        except sa.exc.TimeoutError as exc:
            errors.append(exc)

    t = threading.Thread(target=impatient)
    t.start()
    t.join(10)
    assert len(errors) == 1 and "write lock" in str(errors[0])
    assert lock.waiting == 0
    lock.release()
    lock.acquire(timeout=1)  # free again
    lock.release()


def test_release_by_another_thread_is_refused() -> None:
    lock = FairLock()
    lock.acquire()
    errors: list[BaseException] = []

    def thief() -> None:
        try:
            lock.release()
        except RuntimeError as exc:
            errors.append(exc)

    t = threading.Thread(target=thief)
    t.start()
    t.join(10)
    assert errors
    lock.release()


@pytest.mark.parametrize("n", [16])
def test_many_threads_all_get_through(n: int) -> None:
    lock = FairLock()
    count = {"in": 0, "max": 0, "done": 0}

    def worker() -> None:
        for _ in range(50):
            lock.acquire()
            count["in"] += 1
            count["max"] = max(count["max"], count["in"])
            count["in"] -= 1
            count["done"] += 1
            lock.release()

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert count["done"] == n * 50
    assert count["max"] == 1  # never two holders

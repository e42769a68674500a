"""The loop base (engine/loop.py), its clock and the supervisor: wake-ups are
never lost, drains end or time out, shutdown gives grace then stops, a
crashed loop is restarted with backoff, and PostgreSQL wake-ups come through
one LISTEN connection per store, whatever the number of loops."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

from ferryman.engine.callback_sender import CallbackSender
from ferryman.engine.clock import ManualClock
from ferryman.engine.event_deliverer import EventDeliverer
from ferryman.engine.loop import AsyncLoop, Loop
from ferryman.engine.supervisor import Supervisor
from ferryman.engine.worker import Worker
from ferryman.settings import Settings
from ferryman.store.engine import CALLBACK_CHANNEL, DELIVERY_CHANNEL, WAKE_CHANNEL, Store
from ferryman.store.listener import APPLICATION_NAME

CHANNEL = "ferryman_test_loop"


class Probe(Loop):
    """A loop that records what happens to it; ``on_turn`` and ``on_check``
    let a test act at the moment of a turn or of the sleep's check."""

    name = "probe"
    channels = (CHANNEL,)

    def __init__(self, store: Store, **kw: object) -> None:
        poll = float(kw.pop("poll_seconds", 30.0))  # type: ignore[arg-type]
        grace = float(kw.pop("grace_seconds", 1.0))  # type: ignore[arg-type]
        super().__init__(store, poll_seconds=poll, grace_seconds=grace, **kw)  # type: ignore[arg-type]
        self.turns = 0
        self.turned = threading.Event()
        self.events: list[str] = []
        self.on_turn: Callable[[], None] | None = None
        self.on_check: Callable[[], None] | None = None
        self.idle_after: int | None = None
        self.jobs = 0  # "in flight"

    def turn(self) -> None:
        self.turns += 1
        self.events.append("turn")
        if self.on_turn is not None:
            self.on_turn()
        self.turned.set()

    def next_wait(self) -> float:
        if self.on_check is not None:
            check, self.on_check = self.on_check, None
            check()
        return super().next_wait()

    def idle(self) -> bool:
        return self.idle_after is not None and self.turns >= self.idle_after

    def in_flight(self) -> bool:
        return self.jobs > 0

    def abort(self) -> None:
        self.events.append("abort")
        self.jobs = 0

    def finish(self) -> None:
        self.events.append("finish")

    def release(self) -> None:
        self.events.append("release")


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path}/loop.db")
    yield s
    s.dispose()


@contextmanager
def running(loop: Loop | AsyncLoop) -> Iterator[threading.Thread]:
    t = threading.Thread(target=loop.run, name="test-loop", daemon=True)
    t.start()
    try:
        yield t
    finally:
        loop.stop()
        t.join(10)
        assert not t.is_alive()


def wait_until(pred: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


# -- wake-ups ---------------------------------------------------------------------------


def test_a_wake_up_between_the_check_and_the_sleep_is_not_lost(sqlite_store: Store) -> None:
    loop = Probe(sqlite_store, poll_seconds=30)

    def wake_from_elsewhere() -> None:  # after the turn, while deciding how long to sleep
        t = threading.Thread(target=lambda: sqlite_store.notify(None, CHANNEL))
        t.start()
        t.join()

    loop.on_check = wake_from_elsewhere
    with running(loop):
        wait_until(lambda: loop.turns >= 2, timeout=2)  # the poll is 30 s


def test_a_wake_up_during_a_turn_is_not_lost(sqlite_store: Store) -> None:
    loop = Probe(sqlite_store, poll_seconds=30)
    with running(loop):
        wait_until(lambda: loop.turns == 1)
        started, release = threading.Event(), threading.Event()

        def slow_turn() -> None:
            loop.on_turn = None
            started.set()
            release.wait(5)

        loop.on_turn = slow_turn
        sqlite_store.notify(None, CHANNEL)
        assert started.wait(2)
        sqlite_store.notify(None, CHANNEL)  # arrives while the turn runs
        release.set()
        wait_until(lambda: loop.turns >= 3, timeout=2)


def test_a_loops_own_commits_do_not_wake_it(sqlite_store: Store) -> None:
    """What a turn commits was seen by that turn: no second, empty turn."""
    loop = Probe(sqlite_store, poll_seconds=30)
    loop.on_turn = lambda: sqlite_store.notify(None, CHANNEL)  # from the loop's thread
    with running(loop):
        wait_until(lambda: loop.turns == 1)
        time.sleep(0.3)
        assert loop.turns == 1
        threading.Thread(target=lambda: sqlite_store.notify(None, CHANNEL)).start()
        wait_until(lambda: loop.turns == 2)


def test_only_the_loops_channels_wake_it(sqlite_store: Store) -> None:
    loop = Probe(sqlite_store, poll_seconds=30)
    with running(loop):
        wait_until(lambda: loop.turns == 1)
        sqlite_store.notify(None, CALLBACK_CHANNEL)
        sqlite_store.wake_local()
        time.sleep(0.2)
        assert loop.turns == 1
        sqlite_store.notify(None, CHANNEL)
        wait_until(lambda: loop.turns == 2)


# -- drain --------------------------------------------------------------------------------


def test_drain_returns_once_idle(sqlite_store: Store) -> None:
    loop = Probe(sqlite_store, poll_seconds=0.01)
    loop.idle_after = 3
    loop.run_until_idle(5)
    assert loop.turns == 3
    assert loop.events[-2:] == ["finish", "release"]


def test_drain_times_out(sqlite_store: Store) -> None:
    loop = Probe(sqlite_store, poll_seconds=30)  # never idle, and asleep on a long poll
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match=r"probe was not idle within 0\.3s"):
        loop.run_until_idle(0.3)
    assert 0.25 < time.monotonic() - t0 < 2
    assert loop.events[-1] == "release"  # closed all the same


def test_drain_times_out_during_an_outage(sqlite_store: Store) -> None:
    loop = Probe(sqlite_store)

    def fail() -> None:
        raise sa.exc.OperationalError("SELECT 1", {}, Exception("connection refused"))

    loop.on_turn = fail
    with pytest.raises(TimeoutError):
        loop.run_until_idle(0.5)
    assert loop.failures >= 2


# -- shutdown -------------------------------------------------------------------------------


def test_shutdown_gives_in_flight_work_its_grace_then_aborts_it(sqlite_store: Store) -> None:
    loop = Probe(sqlite_store, grace_seconds=0.4)
    loop.jobs = 1  # never ends by itself
    with running(loop):
        wait_until(lambda: loop.turns == 1)
        t0 = time.monotonic()
        loop.stop()
        wait_until(lambda: "release" in loop.events)
    took = time.monotonic() - t0
    assert 0.35 < took < 2, took
    assert loop.events.count("turn") > 3  # turns went on during the grace (recording)
    assert loop.events[-3:] == ["abort", "finish", "release"]
    assert loop.stopping


def test_shutdown_without_abort_when_the_work_ends_in_its_grace(sqlite_store: Store) -> None:
    loop = Probe(sqlite_store, grace_seconds=5)
    loop.jobs = 1

    def end_job_soon() -> None:
        if loop.stopping and loop.turns > 3:
            loop.jobs = 0

    loop.on_turn = end_job_soon
    t0 = time.monotonic()
    with running(loop):
        wait_until(lambda: loop.turns == 1)
    assert time.monotonic() - t0 < 2
    assert "abort" not in loop.events
    assert loop.events[-2:] == ["finish", "release"]


def test_a_worker_stopped_with_a_running_step_kills_it_after_the_grace(tmp_path: Path) -> None:
    from ferryman.dsl.loader import load_pipeline
    from ferryman.services.catalog import register
    from ferryman.services.queries import get_run
    from ferryman.services.runs import RunService

    pipes = Path(__file__).parent.parent / "pipelines" / "basic.py"
    settings = Settings(home=tmp_path, database_url=f"sqlite:///{tmp_path}/w.db", grace_seconds=0.5)
    store = Store.from_settings(settings)
    try:
        with store.write() as conn:
            pv = register(conn, "default", load_pipeline(f"{pipes}:long_running"))
        params = {"pidfile": str(tmp_path / "pids")}
        run_id = RunService(store).start_version(pv, params).id
        worker = Worker(store, settings)
        with running(worker):
            wait_until(lambda: (tmp_path / "pids").exists(), timeout=20)
            t0 = time.monotonic()
        assert time.monotonic() - t0 < 8  # grace 0.5 s, then killed
        with store.read() as conn:
            node = get_run(conn, run_id)["nodes"][0]
        assert node["error"] == "worker shut down before the step ended"
    finally:
        store.dispose()


def test_a_bug_while_shutting_down_does_not_keep_abort_from_running(sqlite_store: Store) -> None:
    class Strict(Probe):
        def retryable(self, exc: Exception) -> bool:
            return False

    loop = Strict(sqlite_store, grace_seconds=5)
    loop.jobs = 1

    def bug_once_stopping() -> None:
        if loop.stopping:
            raise RuntimeError("a bug")

    loop.on_turn = bug_once_stopping
    t0 = time.monotonic()
    with running(loop):
        wait_until(lambda: loop.turns == 1)
    assert time.monotonic() - t0 < 3  # not the 5 s grace: the turns cannot go on
    assert loop.events[-3:] == ["abort", "finish", "release"]


# -- failures ---------------------------------------------------------------------------------


def test_failed_turns_back_off_and_log_one_line_each(
    sqlite_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock()
    loop = Probe(sqlite_store, clock=clock)
    calls = {"n": 0}

    def flaky() -> None:
        calls["n"] += 1
        if calls["n"] <= 3:
            raise sa.exc.OperationalError("SELECT 1", {}, Exception("connection refused"))

    loop.on_turn = flaky
    caplog.set_level(logging.WARNING)
    with running(loop):
        for n in range(1, 4):
            clock.wait_for_sleepers(waits=n)
            clock.advance(10)
        wait_until(lambda: calls["n"] == 4)
        clock.wait_for_sleepers(waits=4)
        assert clock.waits[:4] == [0.2, 0.4, 0.8, 30.0]  # the backoff, then the poll
    records = [r for r in caplog.records if "turn failed" in r.getMessage()]
    assert len(records) == 3
    for r in records:
        assert r.exc_info is None and "\n" not in r.getMessage()
        assert "database unavailable" in r.getMessage()
    assert loop.failures == 0


def test_an_error_that_is_not_retryable_ends_run(sqlite_store: Store) -> None:
    class Strict(Probe):
        def retryable(self, exc: Exception) -> bool:
            return False

    loop = Strict(sqlite_store)

    def boom() -> None:
        raise RuntimeError("a bug")

    loop.on_turn = boom
    with pytest.raises(RuntimeError, match="a bug"):
        loop.run()
    assert loop.events[-2:] == ["finish", "release"]


# -- the clock --------------------------------------------------------------------------------


def test_a_manual_clock_drives_the_sleep_without_waiting(sqlite_store: Store) -> None:
    clock = ManualClock()
    loop = Probe(sqlite_store, poll_seconds=3600, clock=clock)
    t0 = time.monotonic()
    with running(loop):
        clock.wait_for_sleepers(waits=1)
        assert loop.turns == 1 and clock.waits == [3600]
        clock.advance(3599)
        time.sleep(0.05)
        assert loop.turns == 1
        clock.advance(1)  # the hour is over
        wait_until(lambda: loop.turns == 2)
        clock.wait_for_sleepers(waits=2)
        loop.next_due = clock.monotonic() + 90  # something is due in 90 s
        loop.wake()
        wait_until(lambda: loop.turns == 3)
        clock.wait_for_sleepers(waits=3)
        assert clock.waits[-1] == pytest.approx(90)
    assert time.monotonic() - t0 < 5  # no real hour, no real 90 s


def test_the_manual_clocks_wall_time_moves_with_it() -> None:
    clock = ManualClock()
    wall, mono = clock.now(), clock.monotonic()
    clock.advance(61.5)
    assert (clock.now() - wall).total_seconds() == 61.5
    assert clock.monotonic() - mono == 61.5
    assert clock.now().tzinfo is not None


# -- the async flavour ------------------------------------------------------------------------


class AsyncProbe(AsyncLoop):
    name = "async probe"
    channels = (CHANNEL,)

    def __init__(self, store: Store, grace: float = 1.0, poll: float = 30.0) -> None:
        super().__init__(store, poll_seconds=poll, grace_seconds=grace)
        self.turns = 0
        self.events: list[str] = []
        self.task: object = None
        self.idle_after: int | None = None

    async def turn(self) -> None:
        import asyncio

        self.turns += 1
        if self.turns == 1 and self.idle_after is None:
            self.task = asyncio.create_task(asyncio.sleep(3600))

    async def idle(self) -> bool:
        return self.idle_after is not None and self.turns >= self.idle_after

    def in_flight(self) -> bool:
        import asyncio

        return isinstance(self.task, asyncio.Task) and not self.task.done()

    async def abort(self) -> None:
        import asyncio

        assert isinstance(self.task, asyncio.Task)
        self.events.append("abort")
        self.task.cancel()

    async def finish(self) -> None:
        self.events.append("finish")

    async def release(self) -> None:
        self.events.append("release")


def test_async_loop_wakes_drains_and_shuts_down(sqlite_store: Store) -> None:
    loop = AsyncProbe(sqlite_store, grace=0.3)
    with running(loop):
        wait_until(lambda: loop.turns == 1)
        time.sleep(0.1)
        assert loop.turns == 1  # asleep (the poll is 30 s)
        sqlite_store.notify(None, CHANNEL)  # from another thread
        wait_until(lambda: loop.turns == 2, timeout=2)
        t0 = time.monotonic()
    assert 0.25 < time.monotonic() - t0 < 3
    assert loop.events == ["abort", "finish", "release"]

    drained = AsyncProbe(sqlite_store, poll=0.01)
    drained.idle_after = 2
    drained.run_until_idle(5)
    assert drained.turns == 2
    with pytest.raises(TimeoutError):
        AsyncProbe(sqlite_store, grace=0.1).run_until_idle(0.2)


# -- the supervisor ---------------------------------------------------------------------------


class Forever:
    def __init__(self) -> None:
        self.stopped = threading.Event()
        self.running = threading.Event()

    def run(self) -> None:
        self.running.set()
        self.stopped.wait()

    def stop(self) -> None:
        self.stopped.set()


def test_the_supervisor_restarts_a_crashed_loop_with_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock()
    outage = sa.exc.OperationalError("SELECT 1", {}, Exception("connection refused"))
    built: list[Forever] = []

    def factory() -> Forever:
        if len(built) < 3:
            built.append(Forever())
            raise outage  # the database is down: the loop cannot start
        loop = Forever()
        built.append(loop)
        return loop

    caplog.set_level(logging.INFO, logger="ferryman.engine.supervisor")
    sup = Supervisor("probe", factory, clock=clock)
    sup.start()
    for n in range(1, 4):
        clock.wait_for_sleepers(waits=n)
        clock.advance(60)
    wait_until(lambda: len(built) == 4 and built[-1].running.is_set())
    assert clock.waits == [1.0, 2.0, 4.0]
    assert sup.restarts == 3
    records = [r for r in caplog.records if r.name == "ferryman.engine.supervisor"]
    assert len(records) == 3  # one line per crash
    for r in records:
        assert r.exc_info is None and "database unavailable" in r.getMessage()
    sup.stop()
    assert sup.join(5)
    assert built[-1].stopped.is_set()


def test_the_supervisor_starts_over_after_a_healthy_run() -> None:
    clock = ManualClock()
    loops: list[Forever] = []

    class Crashes(Forever):
        def run(self) -> None:
            self.running.set()
            self.stopped.wait()
            raise RuntimeError("crash")

    def factory() -> Forever:
        loops.append(Crashes())
        return loops[-1]

    sup = Supervisor("probe", factory, clock=clock)
    sup.start()
    for n, backoff in enumerate((1.0, 2.0), start=1):
        wait_until(lambda n=n: len(loops) == n and loops[-1].running.is_set())
        loops[-1].stopped.set()  # crash at once
        clock.wait_for_sleepers(waits=n)
        assert clock.waits[-1] == backoff
        clock.advance(backoff)
    wait_until(lambda: len(loops) == 3 and loops[-1].running.is_set())
    clock.advance(120)  # it runs well for two minutes
    loops[-1].stopped.set()
    clock.wait_for_sleepers(waits=3)
    assert clock.waits[-1] == 1.0  # the backoff started over
    sup.stop()
    assert sup.join(5)


# -- one LISTEN connection per store (PostgreSQL) --------------------------------------------


def listeners(url: str) -> int:
    eng = sa.create_engine(Store(url).url)
    try:
        with eng.connect() as c:
            return int(
                c.execute(
                    sa.text(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE application_name = :a AND datname = current_database()"
                    ),
                    {"a": APPLICATION_NAME},
                ).scalar_one()
            )
    finally:
        eng.dispose()


def test_loops_share_one_listen_connection_per_store(pg_database: str, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, database_url=pg_database, poll_seconds=30, sweep_seconds=30)
    store = Store.from_settings(settings)
    other = Store(pg_database)  # another process, as far as wake-ups go
    probe = Probe(store)
    loops: list[Loop | AsyncLoop] = [
        Worker(store, settings),
        CallbackSender(store, settings),
        EventDeliverer(store, settings),
        probe,
    ]
    threads = [threading.Thread(target=lp.run, daemon=True) for lp in loops]
    base = listeners(pg_database)  # other tests' stores in this database
    try:
        for t in threads:
            t.start()
        wait_until(lambda: listeners(pg_database) == base + 1, timeout=10)
        time.sleep(0.3)
        assert listeners(pg_database) == base + 1  # four loops, one connection
        turns = probe.turns
        with other.write() as conn:  # a NOTIFY from elsewhere reaches the loop
            other.notify(conn, CHANNEL)
        wait_until(lambda: probe.turns > turns, timeout=5)
        # each loop's channel is listened to: the notifications get through
        with other.write() as conn:
            for channel in (WAKE_CHANNEL, CALLBACK_CHANNEL, DELIVERY_CHANNEL):
                other.notify(conn, channel)
    finally:
        for lp in loops:
            lp.stop()
        for t in threads:
            t.join(15)
    assert not any(t.is_alive() for t in threads)
    wait_until(lambda: listeners(pg_database) == base, timeout=10)  # gone with the last loop
    store.dispose()
    other.dispose()


def test_the_listen_connection_comes_back_and_wakes_its_loops(pg_database: str) -> None:
    """A lost LISTEN connection is reopened; the loops are woken once then, to
    look for what was notified while it was gone."""
    store, other = Store(pg_database), Store(pg_database)
    probe = Probe(store)
    try:
        base = listeners(pg_database)
        with running(probe):
            wait_until(lambda: listeners(pg_database) == base + 1, timeout=10)
            turns = probe.turns
            eng = sa.create_engine(other.url)
            with eng.connect() as c:
                c.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE application_name = :a AND datname = current_database()"
                    ),
                    {"a": APPLICATION_NAME},
                )
                c.commit()
            eng.dispose()
            wait_until(lambda: probe.turns > turns, timeout=10)  # the catch-up wake-up
            wait_until(lambda: listeners(pg_database) == base + 1, timeout=10)
            turns = probe.turns
            with other.write() as conn:
                other.notify(conn, CHANNEL)
            wait_until(lambda: probe.turns > turns, timeout=5)
    finally:
        store.dispose()
        other.dispose()


def test_this_processs_own_notifications_wake_its_loops_once(pg_database: str) -> None:
    """A commit of this store wakes its loops in-process, after the commit;
    its NOTIFY, coming back through LISTEN, is passed over (no second turn)."""
    store = Store(pg_database)
    probe = Probe(store)
    try:
        base = listeners(pg_database)
        with running(probe):
            wait_until(lambda: listeners(pg_database) == base + 1, timeout=10)
            time.sleep(0.3)  # the catch-up wake-up of the new LISTEN is over
            for _ in range(3):
                turns = probe.turns

                def commit() -> None:
                    with store.write() as conn:
                        store.notify(conn, CHANNEL)

                threading.Thread(target=commit).start()
                wait_until(lambda turns=turns: probe.turns > turns, timeout=5)
                time.sleep(0.3)
                assert probe.turns == turns + 1
    finally:
        store.dispose()

"""Acceptance: a PostgreSQL outage longer than the lease does not re-run
steps that finished during it (issue 12, item 2).

Two real ``ferryman worker`` processes reach PostgreSQL through a loopback
TCP proxy (``tests/tcp_proxy.py``), which is cut for 2.5 leases while they
run many short steps. Steps that finish during the outage have their
results buffered by their worker. When the proxy is restored each worker is
a sweeper that was itself cut off: it gives the owners of the leases that
expired meanwhile one lease before sweeping them, so every buffered result
is written and no finished step runs again (counted from the files each
attempt writes, not from the database).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from tests.pipelines.reliability import attempts, ended_at
from tests.process_support import Procs, fast_env, wait_for
from tests.tcp_proxy import TcpProxy

from ferryman.dsl.loader import load_pipeline
from ferryman.services.catalog import register
from ferryman.services.runs import RunService
from ferryman.store.engine import Store
from ferryman.store.tables import metadata, runs

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux"),
]

PIPES = Path(__file__).parent.parent / "pipelines" / "reliability.py"
LEASE = 3.0
OUTAGE = 2.5 * LEASE
STEP_SECONDS = 1.0


@pytest.fixture
def pg(pg_database: str) -> Iterator[Store]:
    store = Store(pg_database)
    names = ", ".join(t.name for t in reversed(metadata.sorted_tables))
    with store.engine.begin() as c:
        c.exec_driver_sql(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
    yield store
    store.dispose()


def test_steps_finished_during_an_outage_longer_than_the_lease_are_not_re_run(
    pg: Store, pg_database: str, tmp_path: Path
) -> None:
    outdir = tmp_path / "out"
    outdir.mkdir()
    url = sa.make_url(pg_database)
    with TcpProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        via_proxy = url.set(port=proxy.port).render_as_string(hide_password=False)
        procs = Procs(fast_env(via_proxy, tmp_path / "home", LEASE), tmp_path)
        try:
            with pg.write() as conn:
                pv = register(conn, "default", load_pipeline(f"{PIPES}:sleepers"))
            run_id = (
                RunService(pg)
                .start_version(pv, {"outdir": str(outdir), "seconds": STEP_SECONDS})
                .id
            )
            for wid in ("w1", "w2"):
                procs.start(wid, "worker", "--id", wid, "--concurrency", "4")
            # Cut once both workers are busy, with steps in flight.
            wait_for("8 steps to start", lambda: sum(attempts(outdir).values()) >= 8, 60,
                     procs.check_alive)  # fmt: skip
            time.sleep(0.3)
            proxy.cut()
            cut_at = time.time()
            time.sleep(OUTAGE)
            proxy.restore()
            restored_at = time.time()

            def state() -> str:
                with pg.read() as conn:
                    return str(conn.execute(sa.select(runs.c.state).where(runs.c.id == run_id))
                               .scalar())  # fmt: skip

            wait_for("the run to end", lambda: state() in ("succeeded", "failed"), 120,
                     procs.check_alive)  # fmt: skip
        finally:
            procs.stop_all()
    assert state() == "succeeded", procs.logs()
    # The steps whose first attempt ended while the database was cut off:
    finished_in_outage = [
        n for n in attempts(outdir, "end")
        if (t := ended_at(outdir, n, 1)) is not None and cut_at < t < restored_at
    ]  # fmt: skip
    assert finished_in_outage, "no step finished during the outage: the test proves nothing"
    started = attempts(outdir)
    rerun = sorted(n for n in finished_in_outage if started[n] > 1)
    assert not rerun, f"finished during the outage but run again: {rerun}\n{procs.logs()}"
    print(f"{len(finished_in_outage)} steps finished during the {OUTAGE:g}s outage; none re-run")

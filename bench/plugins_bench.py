"""Web-API plugins: remote jobs through two ``ferryman worker`` processes.

``N`` task steps (``http_job``) against the fake remote service of the
tests (a real HTTP server on loopback, in this process), each job taking
2-5 s, run by two worker processes on PostgreSQL. Printed: the measured
create and get rates (the highest count in any 1 s window and the mean) vs
the limits, the most jobs the remote saw in flight vs the quota, the total
time vs the minimum the limits and quota imply, and the workers' CPU per
remote job. ``--raised`` sets both rates to 1,000 QPS (overhead when
nothing throttles).

    FERRYMAN_TEST_PG_URL=postgresql://postgres@127.0.0.1:5432/test \\
        .venv/bin/python bench/plugins_bench.py --jobs 1000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.remote_fake import RemoteServer  # noqa: E402

from ferryman.domain.spec import PipelineSpec, TaskStep  # noqa: E402
from ferryman.services.catalog import register  # noqa: E402
from ferryman.services.queries import get_run  # noqa: E402
from ferryman.services.runs import RunService  # noqa: E402
from ferryman.store.engine import Store  # noqa: E402

PG_URL = os.environ.get("FERRYMAN_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def fresh_db() -> str:
    admin = sa.create_engine(Store(PG_URL).url, isolation_level="AUTOCOMMIT")
    name = f"fm_plbench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as c:
        c.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()
    return str(sa.make_url(PG_URL).set(database=name).render_as_string(hide_password=False))


def drop_db(url: str) -> None:
    name = sa.make_url(url).database
    admin = sa.create_engine(Store(PG_URL).url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.exec_driver_sql(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname='{name}'"
        )
        c.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
    admin.dispose()


def max_per_second(times: list[float]) -> int:
    ts, best, j = sorted(times), 0, 0
    for i, t in enumerate(ts):
        while ts[j] <= t - 1.0:
            j += 1
        best = max(best, i - j + 1)
    return best


def run_once(jobs: int, raised: bool, quota: int, workers: int) -> dict[str, float]:
    read = (1000.0, 1000) if raised else (30.0, 300)
    write = (1000.0, 1000) if raised else (20.0, 200)
    limits = {
        "read_qps": read[0], "read_burst": read[1], "write_qps": write[0],
        "write_burst": write[1], "max_concurrent": quota, "resync_interval": 1.0,
    }  # fmt: skip
    url = fresh_db()
    remote = RemoteServer()
    rng = random.Random(7)
    durations = [rng.uniform(2.0, 5.0) for _ in range(jobs)]
    steps = [
        TaskStep(
            name=f"j{i}",
            type="http_job",
            config={
                "create": {"url": remote.url + "/jobs", "body": {"duration": d}},
                "status_url": remote.url + "/jobs/{id}",
            },
        )
        for i, d in enumerate(durations)
    ]
    store = Store(url)
    store.prepare_schema()
    with store.write() as conn:
        pv = register(conn, "default", PipelineSpec(name="remote", steps=steps))
    run_id = RunService(store).start_version(pv, {}).id
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERRYMAN_")}
    env.update(
        FERRYMAN_DATABASE_URL=url, FERRYMAN_HOME=f"/tmp/{uuid.uuid4().hex}",
        FERRYMAN_CONCURRENCY=str(jobs // workers + 1),
        FERRYMAN_PLUGIN_LIMITS=json.dumps({"http_job": limits}),
    )  # fmt: skip
    t0 = time.time()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "ferryman", "worker", "--id", f"bench-{i}"],
            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for i in range(workers)
    ]  # fmt: skip
    ps = [psutil.Process(p.pid) for p in procs]
    cpu = 0.0
    try:
        while True:
            cpu = sum(p.cpu_times().user + p.cpu_times().system for p in ps)
            with store.read() as conn:
                state = get_run(conn, run_id, with_nodes=False)["state"]
            if state in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(0.5)
        elapsed = time.time() - t0
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(60)
        remote.close()
        store.dispose()
        drop_db(url)
    stats = remote.fake.stats()
    creates, gets = stats["creates"], stats["gets"]
    span = max(creates + gets) - min(creates) if creates else 1.0
    # The floor: the quota lets `quota` jobs run at once (each for its
    # duration, seen done up to one resync later); creates cost write tokens.
    floor_quota = sum(d + 0.5 for d in durations) / quota
    floor_write = max(jobs - write[1], 0) / write[0]
    return {
        "state_ok": float(state == "succeeded"),
        "elapsed": elapsed,
        "floor": max(floor_quota, floor_write),
        "creates": len(creates),
        "create_max_1s": max_per_second(creates),
        "create_mean": len(creates) / span,
        "gets": len(gets),
        "get_max_1s": max_per_second(gets),
        "get_mean": len(gets) / span,
        "max_in_flight": stats["max_in_flight"],
        "cpu_ms_per_job": cpu * 1000 / jobs,
        "write_qps": write[0], "write_burst": write[1],
        "read_qps": read[0], "read_burst": read[1], "quota": quota,
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--quota", type=int, default=50)
    ap.add_argument("--raised", action="store_true", help="both limits at 1,000 QPS")
    args = ap.parse_args()
    r = run_once(args.jobs, args.raised, args.quota, args.workers)
    print(
        f"| jobs | {args.jobs} ({args.workers} workers, PostgreSQL) "
        f"| run ok: {bool(r['state_ok'])} |"
    )
    print("|---|---|---|")
    print(
        f"| creates | {r['creates']:.0f}, max {r['create_max_1s']:.0f}/s, mean "
        f"{r['create_mean']:.1f}/s | limit {r['write_qps']:g}/s + burst {r['write_burst']:g} |"
    )
    print(
        f"| gets | {r['gets']:.0f}, max {r['get_max_1s']:.0f}/s, mean {r['get_mean']:.1f}/s "
        f"| limit {r['read_qps']:g}/s + burst {r['read_burst']:g} |"
    )
    print(f"| max in flight (remote) | {r['max_in_flight']:.0f} | quota {r['quota']:.0f} |")
    print(f"| total time | {r['elapsed']:.1f} s | floor {r['floor']:.1f} s |")
    print(f"| worker CPU per remote job | {r['cpu_ms_per_job']:.1f} ms | |")


if __name__ == "__main__":
    main()

"""Engine benchmarks (issue: core engine). Not a test: prints a table.

    .venv/bin/python bench/engine_bench.py            # SQLite + PostgreSQL
    .venv/bin/python bench/engine_bench.py --no-pg    # SQLite only

Figures:
- 1,000 no-op inline steps as a chain and as a fan-out, until every step is
  durably recorded as succeeded (embedded SQLite, one worker);
- a 10,000-node DAG of no-op inline steps (100 layers x 100, 3 random
  upstreams each), with the peak RSS of the process that ran it;
- a one-step ``process`` pipeline, run start -> succeeded, against
  ``python -c pass`` on the same interpreter (medians of N, same run);
- the 1,000-step chain and fan-out on PostgreSQL with 2 ``ferryman worker``
  processes.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ferryman.domain.spec import FunctionRef, PipelineSpec, PythonStep
from ferryman.engine.worker import Worker
from ferryman.services.catalog import register
from ferryman.services.runs import RunService
from ferryman.settings import Settings
from ferryman.store.engine import Store

HERE = Path(__file__).resolve().parent
NOOP = FunctionRef(file=str(HERE / "steps.py"), qualname="noop")
PG_URL = os.environ.get("FERRYMAN_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def chain(n: int, infra: str = "inline") -> PipelineSpec:
    return PipelineSpec(
        name=f"chain{n}",
        steps=[
            PythonStep(
                name=f"s{i}",
                function=NOOP,
                infrastructure=infra,
                depends_on=[f"s{i - 1}"] if i else [],
            )
            for i in range(n)
        ],
    )


def fan(n: int) -> PipelineSpec:
    root = PythonStep(name="root", function=NOOP, infrastructure="inline")
    leaves = [
        PythonStep(name=f"s{i}", function=NOOP, infrastructure="inline", depends_on=["root"])
        for i in range(n - 1)
    ]
    return PipelineSpec(name=f"fan{n}", steps=[root, *leaves])


def layered(layers: int, width: int, seed: int = 1) -> PipelineSpec:
    rng = random.Random(seed)
    steps = []
    for layer in range(layers):
        for i in range(width):
            deps = (
                []
                if layer == 0
                else sorted({f"n{layer - 1}-{rng.randrange(width)}" for _ in range(3)})
            )
            steps.append(
                PythonStep(
                    name=f"n{layer}-{i}", function=NOOP, infrastructure="inline", depends_on=deps
                )
            )
    return PipelineSpec(name=f"dag{layers * width}", steps=steps)


def run_embedded(store: Store, settings: Settings, spec: PipelineSpec) -> float:
    """Seconds from creating the run to its durable `succeeded` state."""
    with store.write() as conn:
        pv = register(conn, "bench", spec)
    t0 = time.perf_counter()
    run_id = RunService(store).start_version(pv, {}).id
    Worker(store, settings).run_until({run_id}, timeout=600)
    elapsed = time.perf_counter() - t0
    with store.read() as conn:
        state = conn.exec_driver_sql(f"SELECT state FROM runs WHERE id = '{run_id}'").scalar_one()
    if state != "succeeded":
        raise SystemExit(f"benchmark run ended {state}")
    return elapsed


def sqlite_store(tmp: Path) -> tuple[Store, Settings]:
    settings = Settings(home=tmp, database_url=f"sqlite:///{tmp}/bench.db")
    return Store.from_settings(settings), settings


def bench_dag_subprocess(nodes: int) -> tuple[float, float]:
    """Run the big DAG in a fresh process so its peak RSS is its own."""
    out = subprocess.run(
        [sys.executable, __file__, "--dag-child", str(nodes)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return float(out[0]), float(out[1])


def dag_child(nodes: int) -> None:
    side = int(nodes**0.5)
    with tempfile.TemporaryDirectory() as tmp:
        store, settings = sqlite_store(Path(tmp))
        elapsed = run_embedded(store, settings, layered(side, side))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{elapsed} {rss}")


def bench_process_ratio(store: Store, settings: Settings, n: int) -> tuple[float, float]:
    spec = chain(1, infra="process")
    runs = [run_embedded(store, settings, spec) for _ in range(n)]
    passes = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        passes.append(time.perf_counter() - t0)
    return statistics.median(runs), statistics.median(passes)


def bench_pg_workers(spec: PipelineSpec, workers: int = 2) -> float:
    store = Store(PG_URL)
    from ferryman.store.migrate import upgrade

    upgrade(store)
    with store.write() as conn:
        pv = register(conn, "bench", spec)
    env = {**os.environ, "FERRYMAN_DATABASE_URL": PG_URL}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "ferryman.cli.app", "worker", "--log-level", "WARNING"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(workers)
    ]
    try:
        time.sleep(1.5)  # let the workers start and LISTEN
        t0 = time.perf_counter()
        run_id = RunService(store).start_version(pv, {}).id
        while True:
            with store.read() as conn:
                state = conn.exec_driver_sql(
                    f"SELECT state FROM runs WHERE id = '{run_id}'"
                ).scalar_one()
            if state in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(0.005)
        elapsed = time.perf_counter() - t0
        if state != "succeeded":
            raise SystemExit(f"PostgreSQL benchmark run ended {state}")
        return elapsed
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(20)
        store.dispose()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-pg", action="store_true")
    ap.add_argument("--dag-child", type=int)
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()
    if args.dag_child:
        dag_child(args.dag_child)
        return
    console = Console()
    rows: list[tuple[str, str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        store, settings = sqlite_store(Path(tmp))
        run_embedded(store, settings, chain(20))  # warm-up (imports, caches)
        for spec in (chain(1000), fan(1000)):
            secs = run_embedded(store, settings, spec)
            per = secs / len(spec.steps) * 1000
            rows.append(
                (f"1,000 inline steps, {spec.name[:-4]} (SQLite)", f"{secs:.2f} s",
                 f"{per:.2f} ms/step", "≤ 2 ms/step")
            )  # fmt: skip
        run_ratio = bench_process_ratio(store, settings, args.repeat)
        store.dispose()
    secs, rss = bench_dag_subprocess(10_000)
    rows.append(("10,000-node DAG, inline (SQLite)", f"{secs:.1f} s", f"peak RSS {rss:.0f} MiB",
                 "< 30 s"))  # fmt: skip
    run_s, pass_s = run_ratio
    rows.append(
        ("1-step process pipeline vs python -c pass", f"{run_s * 1000:.0f} ms vs "
         f"{pass_s * 1000:.0f} ms", f"ratio {run_s / pass_s:.2f}x", "< 3x")
    )  # fmt: skip
    if not args.no_pg:
        for spec in (chain(1000), fan(1000)):
            secs = bench_pg_workers(spec)
            rows.append(
                (f"1,000 inline steps, {spec.name[:-4]} (PostgreSQL, 2 workers)",
                 f"{secs:.2f} s", f"{secs:.2f} ms/step", "")
            )  # fmt: skip
    table = Table(title=f"ferryman engine benchmarks — {time.strftime('%Y-%m-%d')}")
    for col in ("benchmark", "total", "figure", "target"):
        table.add_column(col)
    for r in rows:
        table.add_row(*r)
    console.print(table)
    console.print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, SQLite {__import__('sqlite3').sqlite_version}"
    )


if __name__ == "__main__":
    main()

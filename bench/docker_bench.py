"""Docker infrastructure benchmark (issue 5). Not a test: prints a table.

    bash scripts/ensure-docker.sh                 # a daemon and busybox-static
    .venv/bin/python bench/docker_bench.py        # 20 steps, 2 rounds
    .venv/bin/python bench/docker_bench.py --steps 20 --rounds 3

Compares, in the same run and on the same local image (``ferryman-test/busybox:1``,
built with ``docker import`` like the tests do):

- a pipeline of N container steps (busybox ``true``) chained one after the
  other, through the real engine (embedded SQLite store, one worker), from
  creating the run to its durable ``succeeded`` state;
- N sequential ``docker run --rm --network none IMAGE true`` with the CLI;
- N independent steps with worker concurrency P (``--parallel``) against N
  ``docker run --rm`` from P threads.

The per-step figure of the pipeline includes everything ferryman does per
step: claiming, image check, create, start, log streaming, wait, inspect,
remove and the state transitions written to the database. Rounds alternate
CLI and engine so that machine noise hits both.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ferryman.domain.spec import ContainerStep, PipelineSpec  # noqa: E402
from ferryman.engine.worker import Worker  # noqa: E402
from ferryman.services.catalog import register  # noqa: E402
from ferryman.services.runs import RunService  # noqa: E402
from ferryman.settings import Settings  # noqa: E402
from ferryman.store.engine import Store  # noqa: E402

IMAGE = "ferryman-test/busybox:1"


def ensure_image() -> None:
    """Build the busybox test image with ``docker import`` if it is missing."""
    import docker
    from tests.docker_support import rootfs_tar

    client = docker.from_env()
    try:
        client.images.get(IMAGE)
    except docker.errors.ImageNotFound:
        busybox = shutil.which("busybox") or "/bin/busybox"
        repo, tag = IMAGE.split(":")
        client.api.import_image_from_data(
            rootfs_tar(busybox), repository=repo, tag=tag, changes=['CMD ["/bin/sh"]']
        )
    finally:
        client.close()


def fan(n: int) -> PipelineSpec:
    """``n`` independent container steps (they run ``concurrency`` at a time)."""
    steps = [
        ContainerStep(name=f"p{i}", image=IMAGE, command=["true"], infrastructure="docker")
        for i in range(n)
    ]
    return PipelineSpec(name="docker-bench-fan", steps=steps)


def chain(n: int) -> PipelineSpec:
    steps = []
    for i in range(n):
        steps.append(
            ContainerStep(
                name=f"s{i}",
                image=IMAGE,
                command=["true"],
                infrastructure="docker",
                depends_on=[f"s{i - 1}"] if i else [],
            )
        )
    return PipelineSpec(name="docker-bench", steps=steps)


def run_engine(store: Store, settings: Settings, spec: PipelineSpec) -> float:
    with store.write() as conn:
        pv = register(conn, "bench", spec)
    t0 = time.perf_counter()
    run_id = RunService(store).start_version(pv, {}).id
    Worker(store, settings).run_until({run_id}, timeout=900)
    elapsed = time.perf_counter() - t0
    with store.read() as conn:
        state = conn.exec_driver_sql(f"SELECT state FROM runs WHERE id = '{run_id}'").scalar_one()
    if state != "succeeded":
        raise SystemExit(f"benchmark run ended {state}")
    return elapsed


def docker_run() -> None:
    subprocess.run(
        ["docker", "run", "--rm", "--network", "none", IMAGE, "true"],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def run_cli(n: int, parallel: int = 1) -> float:
    t0 = time.perf_counter()
    if parallel == 1:
        for _ in range(n):
            docker_run()
    else:
        with ThreadPoolExecutor(parallel) as pool:
            list(pool.map(lambda _: docker_run(), range(n)))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--parallel", type=int, default=4, help="concurrency of the fan-out rows")
    args = ap.parse_args()
    ensure_image()
    n, par = args.steps, args.parallel
    results: dict[str, list[float]] = {k: [] for k in ("cli", "eng", "cli_par", "eng_par")}
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            home=Path(tmp),
            database_url=f"sqlite:///{tmp}/bench.db",
            concurrency=par,
            infra_config={"docker": {"network_mode": "none"}},
        )
        store = Store.from_settings(settings)
        run_cli(1)  # warm both paths up once
        run_engine(store, settings, chain(1))
        for _ in range(args.rounds):
            results["cli"].append(run_cli(n))
            results["eng"].append(run_engine(store, settings, chain(n)))
            results["cli_par"].append(run_cli(n, par))
            results["eng_par"].append(run_engine(store, settings, fan(n)))
        store.dispose()
    table = Table(title=f"docker: {n} busybox `true` steps, {args.rounds} rounds")
    table.add_column("what")
    table.add_column("total s (median)", justify="right")
    table.add_column("per step s", justify="right")
    table.add_column("rounds (s)", justify="right")
    table.add_column("engine / CLI", justify="right")
    rows = (
        ("docker run --rm, sequential (CLI)", "cli", None),
        ("ferryman chain of container steps", "eng", "cli"),
        (f"docker run --rm, {par} at a time (CLI)", "cli_par", None),
        (f"ferryman fan-out, concurrency {par}", "eng_par", "cli_par"),
    )
    for label, key, base in rows:
        xs = results[key]
        med = statistics.median(xs)
        ratio = f"{med / statistics.median(results[base]):.2f}x" if base else ""
        table.add_row(
            label, f"{med:.2f}", f"{med / n:.3f}", ", ".join(f"{x:.2f}" for x in xs), ratio
        )
    overhead = (statistics.median(results["eng"]) - statistics.median(results["cli"])) / n
    console = Console()
    console.print(table)
    console.print(
        f"sequential overhead per step beyond docker run --rm: {overhead * 1000:+.0f} ms "
        "(target: ratio < 1.5x)"
    )


if __name__ == "__main__":
    main()

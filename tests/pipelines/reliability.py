"""Pipelines of the reliability tests (``tests/acceptance/test_reliability_*``).

Every step records each attempt it starts and ends as a file in ``outdir``
(``<step>.<attempt>.<run id>.start`` / ``.end``), so a test counts how often a step
really ran, whatever the database says.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ferryman import pipeline, step


def _record(outdir: str, kind: str) -> None:
    node = os.environ["FERRYMAN_STEP"]
    attempt = os.environ["FERRYMAN_ATTEMPT"]
    run = os.environ["FERRYMAN_RUN_ID"]
    path = Path(outdir) / f"{node}.{attempt}.{run}.{kind}"
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(f"{time.time()} {os.getpid()}")
    tmp.rename(path)  # atomic: a reader never sees half a record


@step(retries=2, retry_delay=0.1, retry_jitter=0.0)
def nap(outdir: str, first_seconds: float) -> int:
    """Sleeps ``first_seconds`` in its first attempt only (a retry is quick)."""
    _record(outdir, "start")
    if int(os.environ["FERRYMAN_ATTEMPT"]) == 1:
        time.sleep(first_seconds)
    _record(outdir, "end")
    return 1


@pipeline
def napper(outdir: str, first_seconds: float = 60.0) -> None:
    nap(outdir, first_seconds)


@step(retries=2, retry_delay=0.1, retry_jitter=0.0)
def quick(outdir: str, i: int) -> int:
    _record(outdir, "start")
    _record(outdir, "end")
    return i


@step(retries=2, retry_delay=0.1, retry_jitter=0.0)
def hold(outdir: str, seconds: float, after: list[int]) -> int:
    _record(outdir, "start")
    time.sleep(seconds)
    _record(outdir, "end")
    return len(after)


@pipeline
def wide(outdir: str, n: int = 20, seconds: float = 0.0) -> None:
    """``n`` quick steps, then one that takes ``seconds``."""
    hold(outdir, seconds, [quick(outdir, i) for i in range(n)])


@step
def first(outdir: str) -> int:
    _record(outdir, "start")
    _record(outdir, "end")
    return 1


@step
def second(outdir: str, x: int, seconds: float) -> int:
    """Sleeps ``seconds`` while the file ``outdir/slow`` exists."""
    _record(outdir, "start")
    if (Path(outdir) / "slow").exists():
        time.sleep(seconds)
    _record(outdir, "end")
    return x + 1


@step
def third(outdir: str, x: int) -> int:
    _record(outdir, "start")
    _record(outdir, "end")
    return x + 1


@pipeline
def chain(outdir: str, seconds: float = 60.0) -> None:
    """first → second (slow while ``outdir/slow`` exists) → third."""
    third(outdir, second(outdir, first(outdir), seconds))


@step(retries=3, retry_delay=0.1, retry_jitter=0.0)
def snooze(outdir: str, i: int, seconds: float) -> int:
    _record(outdir, "start")
    time.sleep(seconds)
    _record(outdir, "end")
    return i


SLEEPERS = 48


@pipeline
def sleepers(outdir: str, seconds: float = 1.0) -> None:
    """``SLEEPERS`` independent steps of ``seconds`` each."""
    for i in range(SLEEPERS):
        snooze(outdir, i, seconds)


def ended_at(outdir: Path, node: str, attempt: int) -> float | None:
    """When attempt ``attempt`` of ``node`` recorded its end (``time.time()``)."""
    for p in outdir.glob(f"{node}.{attempt}.*.end"):
        return float(p.read_text().split()[0])
    return None


def attempts(outdir: Path, kind: str = "start") -> dict[str, int]:
    """How many attempts of each step (in every run) recorded ``kind``."""
    out: dict[str, int] = {}
    for p in outdir.iterdir():
        parts = p.name.split(".")
        if len(parts) == 4 and parts[3] == kind:
            out[parts[0]] = out.get(parts[0], 0) + 1
    return out

"""A wide fan-out used by the worker-crash acceptance test.

Every ``work`` step records its side effects per attempt in ``outdir``: a
``<node>.<attempt>.<pid>.start`` file when it begins and a matching ``.end``
file when it is done, each holding ``time.time()`` and what the
infrastructure told the step (node, attempt) plus the pid of the worker that
started it. The test counts these files to prove that no attempt ever ran
twice or on two workers at once.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ferryman import pipeline, step

FAN_OUT = 200
SLEEP_SECONDS = 0.5


def _record(outdir: str, kind: str) -> None:
    node = os.environ["FERRYMAN_STEP"]
    attempt = os.environ["FERRYMAN_ATTEMPT"]
    info = {
        "time": time.time(),
        "node": node,
        "attempt": int(attempt),
        "pid": os.getpid(),
        "ppid": os.getppid(),
    }
    path = Path(outdir) / f"{node}.{attempt}.{os.getpid()}.{kind}"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(info))
    tmp.rename(path)  # atomic: a reader never sees half a record


@step
def seed(outdir: str) -> int:
    _record(outdir, "start")
    _record(outdir, "end")
    return FAN_OUT


@step(retries=2, retry_delay=0.1, retry_jitter=0.0)
def work(outdir: str, i: int, total: int) -> int:
    _record(outdir, "start")
    time.sleep(SLEEP_SECONDS)
    _record(outdir, "end")
    return i


@step
def gather(outdir: str, parts: list[int]) -> int:
    _record(outdir, "start")
    if sorted(parts) != list(range(FAN_OUT)):
        raise ValueError(f"fan-in got {len(parts)} parts, not 0..{FAN_OUT - 1}")
    _record(outdir, "end")
    return len(parts)


@pipeline
def crash(outdir: str) -> None:
    """Seed, a fan-out of FAN_OUT sleeping steps, then a fan-in."""
    total = seed(outdir)
    parts = [work.with_options(name=f"work-{i:03d}")(outdir, i, total) for i in range(FAN_OUT)]
    gather(outdir, parts)

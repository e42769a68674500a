"""Pipelines used by the engine tests (steps run in real processes)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from ferryman import pipeline, step


@step(infrastructure="inline")
def numbers(n: int) -> list[int]:
    return list(range(n))


@step
def square_sum(xs: list[int], shard: int, shards: int) -> int:
    print(f"shard {shard} of {shards}")
    print("to stderr", file=sys.stderr)
    return sum(x * x for x in xs if x % shards == shard)


@step(infrastructure="inline")
def total(parts: list[int]) -> int:
    return sum(parts)


@pipeline
def fan(n: int = 10, shards: int = 3) -> None:
    xs = numbers(n)
    total([square_sum(xs, shard=i, shards=shards) for i in range(3)])


@step(infrastructure="inline")
def ok(tag: str) -> str:
    return tag


@step
def boom(message: str) -> None:
    print("about to fail")
    raise RuntimeError(message)


@pipeline
def failing(message: str = "bad data") -> None:
    a = ok("a")
    b = boom(message).after(a)
    ok("after-boom").after(b)
    ok("independent")


@step(retries=3, retry_delay=0.2, retry_backoff=2.0, retry_jitter=0.0)
def flaky(counter: str, fail_times: int) -> int:
    p = Path(counter)
    n = int(p.read_text()) if p.exists() else 0
    p.write_text(str(n + 1))
    if n < fail_times:
        raise ValueError(f"attempt {n + 1} fails")
    return n + 1


@pipeline
def retrying(counter: str, fail_times: int = 2) -> None:
    flaky(counter, fail_times)


@step(timeout=1.0)
def sleepy(seconds: float, pidfile: str) -> None:
    Path(pidfile).write_text(str(os.getpid()))
    time.sleep(seconds)


@pipeline
def slow(seconds: float = 30.0, pidfile: str = "/tmp/x") -> None:
    sleepy(seconds, pidfile)


@step
def spawner(pidfile: str) -> None:
    child = subprocess.Popen(["sleep", "300"])
    Path(pidfile).write_text(f"{os.getpid()} {child.pid}")
    print("spawned", flush=True)
    time.sleep(300)


@pipeline
def long_running(pidfile: str) -> None:
    s = spawner(pidfile)
    ok("never").after(s)


@step(secrets=["PIPELINE_TEST_SECRET"])
def leaky() -> str:
    print("the secret is", os.environ["PIPELINE_TEST_SECRET"])
    return "done"


@pipeline
def secretive() -> None:
    leaky()


@step(infrastructure="inline")
def not_json() -> object:
    return object()


@pipeline
def bad_output() -> None:
    not_json()


@step
def maybe_fail(flag: str) -> str:
    if Path(flag).exists():
        raise RuntimeError("flag present")
    return "fine"


@pipeline
def rerunnable(flag: str) -> None:
    a = ok("first")
    b = maybe_fail(flag).after(a)
    ok("last").after(b)

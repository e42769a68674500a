"""Pipelines chained by event triggers (tests/integration/test_triggers.py)."""

from __future__ import annotations

import time
from pathlib import Path

from ferryman import pipeline, step
from ferryman.dsl.triggers import on_run, output, param, run_field, run_id


@step(infrastructure="inline")
def load(day: str) -> int:
    return len(day) * 10


@step(infrastructure="inline")
def check(flag: bool) -> str:
    if flag:
        raise RuntimeError("asked to fail")
    return "ok"


@pipeline(labels={"team": "data"})
def extract(day: str = "2024-05-01", fail: bool = False) -> None:
    n = load(day)
    check(fail).after(n)


@step(infrastructure="inline")
def record(day: str, rows: int, source_run: str) -> dict[str, object]:
    return {"day": day, "rows": rows, "source_run": source_run}


@pipeline(
    triggers=[
        on_run(
            "extract",
            state="succeeded",
            params={"day": param("day"), "rows": output("load"), "source_run": run_id()},
            labels={"chained": "yes"},
        )
    ]
)
def report(day: str, rows: int, source_run: str) -> None:
    record(day, rows, source_run)


@step(infrastructure="inline")
def note(text: str) -> str:
    return text


@pipeline(
    triggers=[
        on_run(
            "extract",
            state=["failed", "cancelled"],
            params={"failed_run": run_id(), "state": run_field("state")},
            inherit_labels=False,
        )
    ]
)
def alert(failed_run: str, state: str) -> None:
    note(failed_run)


# rows must be an integer: mapping the day (a string) to it is invalid.
@pipeline(triggers=[on_run("extract", params={"rows": param("day")})])
def strict(rows: int) -> None:
    note("never")


@step(infrastructure="inline")
def bump(n: int) -> int:
    return n + 1


@pipeline(triggers=[on_run("pong", params={"n": output("bump")})])
def ping(n: int = 0) -> None:
    bump(n)


@pipeline(triggers=[on_run("ping", params={"n": output("bump")})])
def pong(n: int = 0) -> None:
    bump(n)


@step(retries=2, retry_delay=0.1)
def slow_load(day: str, marker: str) -> int:
    Path(marker).write_text("started")
    time.sleep(3)
    return len(day)


@pipeline
def slow_extract(day: str = "2024-05-01", marker: str = "/tmp/marker") -> None:
    slow_load(day, marker)


@pipeline(triggers=[on_run("slow_extract", params={"rows": output("slow_load")})])
def after_slow(rows: int) -> None:
    note("done")


@pipeline(triggers=[on_run("extract", params={"rows": output("nope")})])
def wrong_step(rows: int) -> None:
    note("x")


@pipeline(triggers=[on_run("extract", params={"rows": param("nope")})])
def wrong_param(rows: int) -> None:
    note("x")


@pipeline(triggers=[on_run("later", params={"rows": output("load")})])
def early(rows: int) -> None:
    note("x")

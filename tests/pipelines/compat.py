"""Pipelines for the compatibility and Slack tests: one writes URIs, one fails."""

from __future__ import annotations

from ferryman import pipeline, step


@step(infrastructure="inline")
def export(day: str) -> dict[str, str]:
    return {"table": f"gs://bucket/exports/{day}.parquet", "note": "plain text"}


@step(infrastructure="inline")
def report(x: dict[str, str]) -> str:
    return "https://reports.example.com/r/1"


@pipeline
def export_data(day: str = "2024-01-01") -> None:
    report(export(day))


@step
def explode(message: str) -> None:
    import os

    print("connecting with token", os.environ.get("COMPAT_TEST_SECRET", "none"))
    raise RuntimeError(message)


@pipeline
def broken_export(message: str = "bad data") -> None:
    explode(message)


@step
def nap(seconds: float) -> str:
    import time

    time.sleep(seconds)
    return "rested"


@pipeline
def napping(seconds: float = 3.0) -> None:
    nap(seconds)


@step(secrets=["SLACK_TEST_SECRET"])
def spill() -> None:
    import os

    secret = os.environ["SLACK_TEST_SECRET"]
    print("connecting with", secret)
    raise RuntimeError(f"login refused for password {secret}")


@pipeline
def spilling() -> None:
    spill()

"""A pipeline that declares its schedules (tests of deploy-time reconciling)."""

from __future__ import annotations

from ferryman import pipeline, step
from ferryman.dsl.schedules import cron, interval


@step(infrastructure="inline")
def hello(who: str) -> str:
    return f"hello {who}"


@pipeline(
    schedules=[
        cron("0 3 * * 1-5", timezone="Asia/Kolkata", name="weekday-morning",
             params={"who": "kolkata"}),
        interval(900, overlap="buffer_one"),
    ]
)  # fmt: skip
def greet(who: str = "world") -> None:
    hello(who)

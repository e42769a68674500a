"""Steps returning outputs of chosen sizes (issue 12, item 12):
tests/integration/test_output_limit.py."""

from __future__ import annotations

from ferryman import pipeline, step


@step(retries=2, retry_delay=0.01)
def make(size: int) -> str:
    print(f"making {size} bytes")
    return "x" * size


@step
def small() -> dict[str, int]:
    return {"n": 1}


@pipeline
def sized(size: int = 100_000_000) -> None:
    make(size)
    small()

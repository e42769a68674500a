"""Plain functions used by the steps of ``etl.yaml`` (no ferryman import needed)."""

from __future__ import annotations


def extract(source: str, limit: int) -> list[int]:
    """Pretend to read ``limit`` rows from ``source``: here, the numbers 1..limit."""
    return list(range(1, limit + 1))


def transform(rows: list[int]) -> list[int]:
    """Square every row."""
    return [r * r for r in rows]


def load(rows: list[int]) -> int:
    """Pretend to write the rows somewhere; return how many were written."""
    return len(rows)

"""A small ETL pipeline: extract, fan out to three transforms, fan in to load.

Run it:  ferryman run examples/etl.py:etl -p source=demo --watch
"""

from __future__ import annotations

from typing import Annotated

from ferryman import Param, language_code, pipeline, step


@step(retries=2, retry_delay=0.5, timeout=60)
def extract(source: str, limit: int) -> list[int]:
    print(f"extracting {limit} rows from {source}")
    return list(range(limit))


@step
def transform(rows: list[int], shard: int, shards: int) -> list[int]:
    mine = [r * r for r in rows if r % shards == shard]
    print(f"shard {shard}: {len(mine)} rows")
    return mine


@step(infrastructure="inline")
def load(parts: list[list[int]], lang: str) -> dict[str, object]:
    rows = sorted(x for part in parts for x in part)
    print(f"loaded {len(rows)} rows ({lang})")
    return {"rows": len(rows), "total": sum(rows)}


@pipeline
def etl(
    source: str = "demo",
    limit: Annotated[int, Param(description="rows to extract", minimum=1)] = 12,
    lang: Annotated[str, language_code()] = "en",
) -> None:
    """Extract rows, square them in three shards, and load the result."""
    rows = extract(source, limit)
    parts = [transform(rows, shard=i, shards=3) for i in range(3)]
    load(parts, lang)

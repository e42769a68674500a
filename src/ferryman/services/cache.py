"""What the engine keeps in memory about a run: ``RunInfo``, cached per process.

A run's identity, parameters, options and spec never change after it is
created, so caching them is safe; the gate reads them for every event it
writes, the worker for every attempt it prepares.
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ferryman.domain.options import RunOptions
from ferryman.domain.spec import PipelineSpec
from ferryman.errors import NotFound
from ferryman.services.catalog import spec_of_version
from ferryman.store.tables import runs


@dataclass
class RunInfo:
    """What the engine needs to know about a run, cached per process."""

    id: str
    namespace: str
    pipeline: str
    version: str
    version_id: int
    labels: dict[str, str]
    params: dict[str, Any]
    options: RunOptions
    spec: PipelineSpec
    downstream: dict[str, list[str]]
    started: bool = False  # known to be past `queued` (saves a no-op UPDATE per claim)
    deadline: dt.datetime | None = None  # the run's timeout, as a wall-clock time

    @property
    def timeout(self) -> float | None:
        """The run's timeout in seconds: its option, else the pipeline's."""
        return self.options.timeout if self.options.timeout is not None else self.spec.timeout

    def descendants(self, name: str) -> list[str]:
        """Every step downstream of ``name``, transitively."""
        seen: set[str] = set()
        queue = deque(self.downstream.get(name, ()))
        while queue:
            n = queue.popleft()
            if n not in seen:
                seen.add(n)
                queue.extend(self.downstream.get(n, ()))
        return list(seen)


class RunCache:
    """Run metadata by id (immutable after creation, so caching is safe)."""

    def __init__(self, max_size: int = 4096) -> None:
        self._runs: dict[str, RunInfo] = {}
        self._max = max_size

    def get(self, conn: Connection, run_id: str) -> RunInfo:
        """The run's info, read from the database on the first call."""
        info = self._runs.get(run_id)
        if info is None:
            row = conn.execute(sa.select(runs).where(runs.c.id == run_id)).first()
            if row is None:
                raise NotFound(f"no run {run_id!r}")
            spec = spec_of_version(conn, row.pipeline_version_id)
            info = RunInfo(
                id=row.id,
                namespace=row.namespace,
                pipeline=row.pipeline,
                version=row.version,
                version_id=row.pipeline_version_id,
                labels=row.labels or {},
                params=row.params or {},
                options=RunOptions.from_stored(row.options),
                spec=spec,
                downstream=spec.downstream(),
                deadline=row.deadline,
            )
            self.put(info)
        return info

    def peek(self, run_id: str) -> RunInfo | None:
        """The run's info if it is cached (no database read)."""
        return self._runs.get(run_id)

    def put(self, info: RunInfo) -> None:
        """Remember ``info`` (a run just created), dropping the oldest entry when full."""
        if len(self._runs) >= self._max and info.id not in self._runs:
            self._runs.pop(next(iter(self._runs)))
        self._runs[info.id] = info

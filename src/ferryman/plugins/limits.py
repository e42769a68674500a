"""Per-plugin limits: the read and write rate limiters, quotas, resync and
failure settings (``PluginLimits``), and the limiter that enforces a rate
across all workers (``SharedRateLimiter``).

A rate limiter is two buckets in a row: an in-process ``aiolimiter`` bucket
(the same rate) so the database is not asked more often than the limit, and
the shared bucket in the database (``TaskState.take_token``: one atomic
statement on PostgreSQL), which is what makes the limit hold for the sum of
all workers. ``get`` calls take read tokens; ``create`` and ``delete`` write
tokens.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiolimiter import AsyncLimiter
from pydantic import BaseModel, ConfigDict, Field

from ferryman.plugins.state import TaskState
from ferryman.settings import Settings


class PluginLimits(BaseModel):
    """The limits and settings of one plugin (defaults below; see docs/plugins.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    read_qps: float = Field(default=50.0, gt=0, description="get calls per second, all workers")
    read_burst: int = Field(default=100, ge=1)
    write_qps: float = Field(default=10.0, gt=0, description="create/delete calls per second")
    write_burst: int = Field(default=20, ge=1)
    max_concurrent: int = Field(
        default=100, ge=1, description="remote resources in flight per namespace key"
    )
    quota_queue_timeout: float | None = Field(
        default=None, gt=0, description="fail a step that waited this long for quota"
    )
    resync_interval: float = Field(default=5.0, gt=0, description="seconds between gets")
    resync_workers: int = Field(default=10, ge=1, description="gets in flight per worker")
    max_system_failures: int = Field(
        default=10, ge=1, description="consecutive system failures that fail the attempt"
    )
    call_timeout: float = Field(default=30.0, gt=0, description="seconds per remote call")
    retry_initial: float = Field(default=0.5, gt=0, description="first backoff after a failure")
    retry_max: float = Field(default=30.0, gt=0, description="longest backoff")


class SharedRateLimiter:
    """``qps`` with ``burst`` for all workers together (module docstring)."""

    def __init__(
        self,
        state: TaskState,
        bucket: str,
        qps: float,
        burst: int,
        *,
        on_throttled: Callable[[], None] | None = None,
    ) -> None:
        self.state, self.bucket, self.qps, self.burst = state, bucket, qps, burst
        # aiolimiter lets max_rate through per time_period: burst per burst/qps s.
        self._local = AsyncLimiter(burst, burst / qps)
        self._on_throttled = on_throttled

    async def acquire(self) -> None:
        """Wait until this worker may make one call."""
        await self._local.acquire()
        throttled = False
        while True:
            wait = await asyncio.to_thread(self.state.take_token, self.bucket, self.qps, self.burst)
            if wait <= 0:
                return
            if not throttled and self._on_throttled is not None:
                self._on_throttled()
            throttled = True
            await asyncio.sleep(min(max(wait, 0.005), 1.0))


def backoff(failures: int, limits: PluginLimits, retry_after: float | None = None) -> float:
    """Seconds to wait after ``failures`` consecutive system failures."""
    delay: float = min(limits.retry_initial * 2.0 ** max(failures - 1, 0), limits.retry_max)
    if retry_after is not None:
        delay = max(delay, min(retry_after, limits.retry_max * 4))
    return delay


def configured_limits(settings: Settings) -> dict[str, dict[str, Any]]:
    """Limits per plugin id from the settings: the file of
    ``FERRYMAN_PLUGINS_CONFIG``, then ``FERRYMAN_PLUGIN_LIMITS``, then the
    ``task`` entry of ``FERRYMAN_INFRA_CONFIG`` (each wins over the one
    before, field by field). ``ValueError`` naming the file or variable and
    the problem; each plugin's limits are validated here, at start."""
    merged: dict[str, dict[str, Any]] = {}
    sources: list[tuple[str, Any]] = []
    path = settings.plugins.plugins_config
    if path is not None:
        import yaml  # a worker's start only

        try:
            data = yaml.safe_load(Path(path).expanduser().read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"FERRYMAN_PLUGINS_CONFIG ({path}): {exc}") from None
        sources.append((f"FERRYMAN_PLUGINS_CONFIG ({path})", data or {}))
    sources.append(("FERRYMAN_PLUGIN_LIMITS", settings.plugins.plugin_limits))
    task = settings.worker.infra_config.get("task", {})
    sources.append(("FERRYMAN_INFRA_CONFIG[task][plugins]", task.get("plugins") or {}))
    for where, data in sources:
        if not isinstance(data, dict):
            raise ValueError(f"{where}: must be a mapping of plugin id to limits")
        for pid, limits in data.items():
            if not isinstance(limits, dict):
                raise ValueError(f"{where}: {pid}: must be a mapping of limits")
            merged[str(pid)] = {**merged.get(str(pid), {}), **limits}
    for pid, limits in merged.items():
        try:
            PluginLimits.model_validate(limits)
        except ValueError as exc:
            raise ValueError(f"limits of plugin {pid!r}: {exc}") from None
    return merged


def infra_configs(settings: Settings) -> dict[str, dict[str, Any]]:
    """``FERRYMAN_INFRA_CONFIG`` with the plugins' limits put into its ``task`` entry."""
    configs = dict(settings.worker.infra_config)
    limits = configured_limits(settings)
    if limits:
        configs["task"] = {**configs.get("task", {}), "plugins": limits}
    return configs

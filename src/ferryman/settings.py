"""Configuration: ``FERRYMAN_*`` environment variables, built once at the edge
and passed down (there is no global settings object)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every setting, read from ``FERRYMAN_<NAME>`` variables."""

    model_config = SettingsConfigDict(env_prefix="FERRYMAN_", extra="ignore")

    home: Path = Field(default=Path("~/.ferryman"), description="Where embedded state lives")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default: SQLite under FERRYMAN_HOME"
    )
    env: Literal["development", "production"] = "development"
    auto_migrate: bool = Field(default=True, description="Upgrade the schema on start")
    sqlite_synchronous: Literal["OFF", "NORMAL", "FULL"] = Field(
        default="NORMAL",
        description="SQLite fsync policy; NORMAL (WAL) survives process crashes, FULL power loss",
    )
    lease_seconds: float = Field(default=30.0, gt=0, description="Step lease length")
    heartbeat_seconds: float | None = Field(default=None, gt=0)
    sweep_seconds: float = Field(
        default=5.0, gt=0, description="How often expired leases are swept"
    )
    poll_seconds: float = Field(
        default=2.0, gt=0, description="Fallback poll when no wake-up arrives"
    )
    concurrency: int = Field(default=16, ge=1, le=4096, description="Steps a worker runs at once")
    grace_seconds: float = Field(default=10.0, ge=0, description="SIGTERM→SIGKILL grace on cancel")

    @model_validator(mode="after")
    def _derive(self) -> Settings:
        self.home = self.home.expanduser()
        if self.heartbeat_seconds is None:
            self.heartbeat_seconds = max(self.lease_seconds / 3, 0.05)
        return self

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home / 'ferryman.db'}"

    @property
    def heartbeat(self) -> float:
        assert self.heartbeat_seconds is not None
        return self.heartbeat_seconds

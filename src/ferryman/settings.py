"""Configuration: ``FERRYMAN_*`` environment variables, built once at the edge
and passed down (there is no global settings object)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_JWT_SECRET = "ferryman-development-secret-change-me"


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
    trigger_max_depth: int = Field(
        default=10,
        ge=0,
        le=1000,
        description="Longest chain of runs started by event triggers (stops trigger loops)",
    )
    infra_config: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        repr=False,  # may hold registry credentials
        description='Per-infrastructure settings (JSON keyed by kind, e.g. {"docker": {...}})',
    )

    # -- server (REST API) --
    host: str = Field(default="127.0.0.1", description="Address the server listens on")
    port: int = Field(default=8787, ge=1, le=65535, description="Port the server listens on")
    public_url: str | None = Field(
        default=None, description="Base URL used in links (default http://HOST:PORT)"
    )
    jwt_secret: SecretStr = Field(
        default=SecretStr(DEFAULT_JWT_SECRET),
        description="Signs access tokens; must be set (32+ characters) in production",
    )
    jwt_ttl_seconds: int = Field(default=3600, ge=60, description="Access token lifetime")
    admin_password: SecretStr | None = Field(
        default=None, description="Password of the first admin (generated and printed if unset)"
    )
    # -- run-completion callbacks --
    callback_timeout: float = Field(default=10.0, gt=0, description="Per-request timeout (s)")
    callback_max_attempts: int = Field(default=12, ge=1, description="Attempts before dead")
    callback_backoff: float = Field(default=2.0, gt=0, description="First retry delay (s)")
    callback_max_backoff: float = Field(default=600.0, gt=0, description="Retry delay cap (s)")
    webhook_secret: SecretStr | None = Field(
        default=None, description="whsec_… secret signing run-completion webhooks"
    )
    slack_bot_token: SecretStr | None = Field(default=None, description="Slack bot token (xoxb-…)")
    slack_api_url: str = Field(
        default="https://slack.com/api/", description="Slack Web API base URL"
    )
    # -- event subscriptions (issue 4) --
    subscriptions_file: Path | None = Field(
        default=None, description="YAML/JSON file of subscriptions, re-read when it changes"
    )
    delivery_timeout: float = Field(default=10.0, gt=0, le=300, description="Per-request timeout")
    delivery_max_attempts: int = Field(default=15, ge=1, description="Attempts before dead-letter")
    delivery_max_age: float = Field(
        default=86400.0, gt=0, description="Seconds of retrying before dead-letter"
    )
    delivery_backoff: float = Field(default=1.0, gt=0, description="First retry delay (s)")
    delivery_max_backoff: float = Field(default=300.0, gt=0, description="Retry delay cap (s)")
    delivery_concurrency: int = Field(
        default=256, ge=1, le=10000, description="Event deliveries in flight per server"
    )
    delivery_per_subscriber: int = Field(
        default=16, ge=1, le=1000, description="Deliveries in flight per subscriber"
    )

    @model_validator(mode="after")
    def _derive(self) -> Settings:
        self.home = self.home.expanduser()
        if self.heartbeat_seconds is None:
            self.heartbeat_seconds = max(self.lease_seconds / 3, 0.05)
        if self.heartbeat_seconds >= self.lease_seconds:
            raise ValueError(
                f"FERRYMAN_HEARTBEAT_SECONDS ({self.heartbeat_seconds:g}) must be shorter than "
                f"FERRYMAN_LEASE_SECONDS ({self.lease_seconds:g}), or leases expire between beats"
            )
        return self

    def check_production(self) -> None:
        """Refuse to serve in production with a default or weak secret."""
        if self.env != "production":
            return
        secret = self.jwt_secret.get_secret_value()
        if secret == DEFAULT_JWT_SECRET or len(secret) < 32:
            raise ValueError(
                "FERRYMAN_ENV=production needs FERRYMAN_JWT_SECRET set to a random value of "
                "at least 32 characters (the default is for development only)"
            )

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home / 'ferryman.db'}"

    @property
    def heartbeat(self) -> float:
        assert self.heartbeat_seconds is not None
        return self.heartbeat_seconds

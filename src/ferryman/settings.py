"""Configuration: ``FERRYMAN_*`` environment variables, built once at the edge
and passed down (there is no global settings object)."""

from __future__ import annotations

import contextlib
import ipaddress
import math
import os
import sys
from collections import Counter
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The built-in secret of earlier versions: public, so never a secret again.
PUBLIC_JWT_SECRET = "ferryman-development-secret-change-me"
#: What a production JWT secret needs (see ``Settings.check_jwt_secret``).
JWT_SECRET_MIN_LENGTH = 32
JWT_SECRET_MIN_DISTINCT = 8
JWT_SECRET_MIN_BITS = 80
JWT_SECRET_RULE = (
    f"at least {JWT_SECRET_MIN_LENGTH} characters, at least {JWT_SECRET_MIN_DISTINCT} "
    f"different characters and an estimated {JWT_SECRET_MIN_BITS} bits of entropy "
    "(length x Shannon entropy per character); generate one with "
    "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
)


def estimated_bits(secret: str) -> float:
    """A floor-style entropy estimate: length x Shannon entropy of its characters."""
    n = len(secret)
    counts = Counter(secret).values()
    return -sum(c * math.log2(c / n) for c in counts) if n else 0.0


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
    jwt_secret: SecretStr | None = Field(
        default=None,
        description="Signs access tokens; default: generated once per home "
        "(FERRYMAN_HOME/jwt_secret); must be set, and strong, in production",
    )
    jwt_ttl_seconds: int = Field(default=3600, ge=60, description="Access token lifetime")
    forwarded_allow_ips: str = Field(
        default="127.0.0.1",
        description="Proxies trusted to say the client address (X-Forwarded-For), "
        "comma-separated addresses or networks, or * for any",
    )
    # -- logins (issue 11): lockout per (user, client address), rates, hashing pool --
    login_max_failures: int = Field(
        default=5, ge=1, le=1000, description="Failed logins per (user, address) before a lock"
    )
    login_lock_seconds: float = Field(
        default=60.0, gt=0, description="First lock; each further failure doubles it"
    )
    login_max_lock_seconds: float = Field(default=3600.0, gt=0, description="Longest lock")
    login_rate_per_address: int = Field(
        default=30, ge=1, description="Login attempts per minute per client address"
    )
    login_rate_per_user: int = Field(
        default=60, ge=1, description="Login attempts per minute per username"
    )
    login_hash_threads: int | None = Field(
        default=None, ge=1, le=64, description="Threads checking passwords (default: half the CPUs)"
    )
    login_queue: int = Field(
        default=16, ge=0, le=10000, description="Logins waiting for a hashing thread before 429"
    )
    # -- HTTP server limits (issue 11): slow or idle clients are dropped --
    http_header_timeout: float = Field(
        default=10.0, gt=0, le=3600, description="Seconds a client has to send a request head"
    )
    http_body_timeout: float = Field(
        default=60.0, gt=0, le=86400, description="Seconds a client has to send a request body"
    )
    http_keepalive_timeout: int = Field(
        default=5, ge=1, le=3600, description="Seconds an idle keep-alive connection stays open"
    )
    http_max_connections: int = Field(
        default=1000,
        ge=1,
        le=1_000_000,
        description="Connections and requests at once; 503 past it",
    )
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
    # -- security (issue 11) --
    secret_key: SecretStr | None = Field(
        default=None,
        repr=False,
        description="Encrypts stored secrets (subscription secrets and header values); "
        "several keys comma-separated: the first encrypts, all decrypt (rotation). Default: "
        "generated once per home (FERRYMAN_HOME/secret_key); required in production on PostgreSQL",
    )
    step_env_passthrough: str | None = Field(
        default=None,
        description="More of the worker's variables a process step gets (comma-separated "
        "names or globs, e.g. 'AWS_PROFILE,HF_*'); never FERRYMAN_* ones",
    )
    outbound_allow_networks: str | None = Field(
        default=None,
        description="Networks (comma-separated CIDRs) webhooks and subscriptions may reach "
        "although they are private, loopback or link-local (production refuses them otherwise)",
    )
    http_max_body_bytes: int = Field(
        default=8 * 1024 * 1024, ge=1024, description="Largest request body (413 past it)"
    )
    max_params_bytes: int = Field(
        default=1024 * 1024, ge=64, description="Largest run parameters, as JSON (422 past it)"
    )
    max_spec_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=1024,
        description="Largest pipeline definition: a registered spec as JSON, a pipeline file",
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

    @field_validator("outbound_allow_networks")
    @classmethod
    def _networks(cls, value: str | None) -> str | None:
        for item in (t.strip() for t in (value or "").split(",")):
            if item:
                try:
                    ipaddress.ip_network(item, strict=False)
                except ValueError:
                    raise ValueError(
                        f"{item!r} is not a network (use CIDRs such as 10.0.0.0/8)"
                    ) from None
        return value

    @model_validator(mode="after")
    def _derive(self) -> Settings:
        self.home = self.home.expanduser()
        if self.heartbeat_seconds is None:
            self.heartbeat_seconds = max(self.lease_seconds / 3, 0.05)
        if self.login_hash_threads is None:
            self.login_hash_threads = max(1, (os.cpu_count() or 2) // 2)
        if self.heartbeat_seconds >= self.lease_seconds:
            raise ValueError(
                f"FERRYMAN_HEARTBEAT_SECONDS ({self.heartbeat_seconds:g}) must be shorter than "
                f"FERRYMAN_LEASE_SECONDS ({self.lease_seconds:g}), or leases expire between beats"
            )
        return self

    def check_production(self) -> None:
        """Refuse to serve in production without a strong, configured secret.

        In development an unset secret is generated per home; in production
        it must be set: several servers (on several machines, sharing one
        PostgreSQL) must all sign with the same one, and it must be strong.
        """
        if self.env != "production":
            return
        if self.jwt_secret is None:
            raise ValueError(
                "FERRYMAN_ENV=production needs FERRYMAN_JWT_SECRET set (the same value on "
                f"several servers sharing a database): {JWT_SECRET_RULE}"
            )
        self.check_jwt_secret(self.jwt_secret.get_secret_value())
        self.check_secret_key()

    @staticmethod
    def check_jwt_secret(secret: str) -> None:
        """Raise ``ValueError`` naming every requirement ``secret`` misses (never the
        secret itself)."""
        problems = []
        if secret == PUBLIC_JWT_SECRET:
            problems.append("it is the public development value of earlier versions")
        if len(secret) < JWT_SECRET_MIN_LENGTH:
            problems.append(f"it has fewer than {JWT_SECRET_MIN_LENGTH} characters")
        if len(set(secret)) < JWT_SECRET_MIN_DISTINCT:
            problems.append(f"it has fewer than {JWT_SECRET_MIN_DISTINCT} different characters")
        elif estimated_bits(secret) < JWT_SECRET_MIN_BITS:
            problems.append(f"its estimated entropy is below {JWT_SECRET_MIN_BITS} bits")
        if problems:
            raise ValueError(
                f"FERRYMAN_JWT_SECRET is too weak ({'; '.join(problems)}). "
                f"It needs {JWT_SECRET_RULE}"
            )

    def check_secret_key(self) -> None:
        """Refuse a weak ``FERRYMAN_SECRET_KEY``, and in production on PostgreSQL
        an unset one: servers on several machines share that database, and a
        key generated per home would differ between them."""
        if self.secret_key is None:
            if self.env == "production" and self.db_url.startswith("postgresql"):
                raise ValueError(
                    "FERRYMAN_ENV=production on PostgreSQL needs FERRYMAN_SECRET_KEY set (the "
                    "same value on every server and worker sharing the database): "
                    + JWT_SECRET_RULE.replace("`", "")
                )
            return
        for i, key in enumerate(self.secret_key.get_secret_value().split(",")):
            try:
                self.check_jwt_secret(key.strip())
            except ValueError as exc:
                which = "FERRYMAN_SECRET_KEY" + (f" (key {i + 1})" if i else "")
                raise ValueError(str(exc).replace("FERRYMAN_JWT_SECRET", which)) from None

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

    @property
    def hash_threads(self) -> int:
        assert self.login_hash_threads is not None
        return self.login_hash_threads


#: Variables holding ferryman's secrets (or credentials: the database URL,
#: registry passwords in the infrastructure settings).
SECRET_VARIABLES = (
    "FERRYMAN_JWT_SECRET",
    "FERRYMAN_ADMIN_PASSWORD",
    "FERRYMAN_WEBHOOK_SECRET",
    "FERRYMAN_SLACK_BOT_TOKEN",
    "FERRYMAN_SECRET_KEY",
    "FERRYMAN_DATABASE_URL",
    "FERRYMAN_INFRA_CONFIG",
)


def protect_process_secrets() -> list[str]:
    """What ``ferryman server`` and ``ferryman worker`` do once their settings
    are read: forget the secret variables (``forget_secret_environ``) and, on
    Linux, make the process non-dumpable, so that other processes of the same
    user — the steps it starts among them — can neither read its initial
    environment (``/proc/<pid>/environ``) nor its memory, nor attach a
    debugger (the kernel then allows it to root only). Returns the names
    forgotten."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_dumpable = 4
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_dumpable, 0, 0, 0, 0)
    return forget_secret_environ()


def forget_secret_environ(environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Remove ``SECRET_VARIABLES`` from the process environment, once the
    settings have been read (``ferryman server`` and ``ferryman worker`` do):
    code this process runs itself (``inline`` steps, libraries that report
    their environment) no longer finds them in ``os.environ``. Returns the
    names removed. Hygiene, not isolation: see docs/server.md, "Security"."""
    environ = os.environ if environ is None else environ
    gone = [name for name in SECRET_VARIABLES if name in environ]
    for name in gone:
        del environ[name]
    return gone

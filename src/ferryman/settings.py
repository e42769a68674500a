"""Configuration: ``FERRYMAN_*`` environment variables, built once at the edge
and passed down (there is no global settings object)."""

from __future__ import annotations

import ipaddress
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ferryman.domain.retry import WEBHOOK_SCHEDULE, RetrySchedule

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


class _Group(BaseSettings):
    """A group of settings. Each field is read from its own ``FERRYMAN_*``
    variable: the group's ``env_prefix`` plus the field's name, or the
    variable named by its ``validation_alias``."""

    model_config = SettingsConfigDict(env_prefix="FERRYMAN_", extra="forbid", populate_by_name=True)


class DatabaseSettings(_Group):
    """Where state lives (``FERRYMAN_DATABASE_URL`` …)."""

    url: str | None = Field(
        default=None,
        validation_alias="FERRYMAN_DATABASE_URL",
        description="SQLAlchemy URL; default: SQLite under FERRYMAN_HOME",
    )
    auto_migrate: bool = Field(default=True, description="Upgrade the schema on start")
    sqlite_synchronous: Literal["OFF", "NORMAL", "FULL"] = Field(
        default="NORMAL",
        description="SQLite fsync policy; NORMAL (WAL) survives process crashes, FULL power loss",
    )


class LoopSettings(_Group):
    """What every long-running loop (worker, callback sender, event deliverer) shares."""

    poll_seconds: float = Field(
        default=2.0, gt=0, description="Fallback poll when no wake-up arrives"
    )
    grace_seconds: float = Field(
        default=10.0,
        ge=0,
        description="On cancel and shutdown: SIGTERM→SIGKILL grace of a step; time in-flight "
        "work gets to finish",
    )


class WorkerSettings(_Group):
    """How workers claim, run and lease steps."""

    lease_seconds: float = Field(default=30.0, gt=0, description="Step lease length")
    heartbeat_seconds: float | None = Field(
        default=None,
        gt=0,
        description="How often leases are renewed (default: a third of the lease)",
    )
    sweep_seconds: float = Field(
        default=5.0, gt=0, description="How often expired leases are swept"
    )
    concurrency: int = Field(default=16, ge=1, le=4096, description="Steps a worker runs at once")
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
    step_env_passthrough: str | None = Field(
        default=None,
        description="More of the worker's variables a process step gets (comma-separated "
        "names or globs, e.g. 'AWS_PROFILE,HF_*'); never FERRYMAN_* ones",
    )
    max_output_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="Largest output a step may return, as JSON (a larger one fails the step)",
    )

    @model_validator(mode="after")
    def _heartbeat(self) -> WorkerSettings:
        if self.heartbeat_seconds is None:
            self.heartbeat_seconds = max(self.lease_seconds / 3, 0.05)
        if self.heartbeat_seconds >= self.lease_seconds:
            raise ValueError(
                f"FERRYMAN_HEARTBEAT_SECONDS ({self.heartbeat_seconds:g}) must be shorter than "
                f"FERRYMAN_LEASE_SECONDS ({self.lease_seconds:g}), or leases expire between beats"
            )
        return self

    @property
    def heartbeat(self) -> float:
        assert self.heartbeat_seconds is not None
        return self.heartbeat_seconds


class ApiSettings(_Group):
    """The REST API server: where it listens, its limits, its tokens."""

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
    admin_password: SecretStr | None = Field(
        default=None, description="Password of the first admin (generated and printed if unset)"
    )
    forwarded_allow_ips: str = Field(
        default="127.0.0.1",
        description="Proxies trusted to say the client address (X-Forwarded-For), "
        "comma-separated addresses or networks, or * for any",
    )
    # Slow or idle clients are dropped; oversized input is refused (issue 11).
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


class LoginSettings(_Group):
    """Failed logins locked per (user, client address); rates; the hashing pool."""

    model_config = SettingsConfigDict(env_prefix="FERRYMAN_LOGIN_")

    max_failures: int = Field(
        default=5, ge=1, le=1000, description="Failed logins per (user, address) before a lock"
    )
    lock_seconds: float = Field(
        default=60.0, gt=0, description="First lock; each further failure doubles it"
    )
    max_lock_seconds: float = Field(default=3600.0, gt=0, description="Longest lock")
    rate_per_address: int = Field(
        default=30, ge=1, description="Login attempts per minute per client address"
    )
    rate_per_user: int = Field(
        default=60, ge=1, description="Login attempts per minute per username"
    )
    hash_threads: int = Field(
        default_factory=lambda: max(1, (os.cpu_count() or 2) // 2),
        ge=1,
        le=64,
        description="Threads checking passwords (default: half the CPUs)",
    )
    queue: int = Field(
        default=16, ge=0, le=10000, description="Logins waiting for a hashing thread before 429"
    )


class _RetrySchedule:
    """The retry schedule of a group with ``retry_schedule``, ``backoff`` and
    ``max_backoff`` (callbacks, deliveries)."""

    retry_schedule: str
    backoff: float | None
    max_backoff: float | None

    @field_validator("retry_schedule")
    @classmethod
    def _check_schedule(cls, v: str) -> str:
        RetrySchedule.parse(v)  # a clear ValueError: which interval is wrong
        return v

    def schedule(self) -> RetrySchedule:
        """The waits between attempts: ``retry_schedule``, or, when ``backoff``
        is set, ``backoff`` doubling up to ``max_backoff`` (300 s unless set)."""
        if self.backoff is not None:
            return RetrySchedule.exponential(self.backoff, self.max_backoff or 300.0)
        return RetrySchedule.parse(self.retry_schedule)

    def retry_after_cap(self) -> float:
        """The longest ``Retry-After`` a receiver is obeyed for."""
        return self.max_backoff or self.schedule().longest


class CallbackSettings(_RetrySchedule, _Group):
    """Run-completion callbacks (webhooks, Slack messages)."""

    model_config = SettingsConfigDict(env_prefix="FERRYMAN_CALLBACK_")

    timeout: float = Field(default=10.0, gt=0, description="Per-request timeout (s)")
    retry_schedule: str = Field(
        default=WEBHOOK_SCHEDULE, description="Waits between attempts; the last repeats"
    )
    max_age: float = Field(default=86400.0, gt=0, description="Seconds of retrying before dead")
    max_attempts: int | None = Field(
        default=None, ge=1, description="Attempts before dead (default: no limit, by age)"
    )
    backoff: float | None = Field(
        default=None, gt=0, description="First delay of an exponential schedule instead"
    )
    max_backoff: float | None = Field(
        default=None, gt=0, description="Cap of the exponential schedule and of Retry-After"
    )
    webhook_secret: SecretStr | None = Field(
        default=None,
        validation_alias="FERRYMAN_WEBHOOK_SECRET",
        description="whsec_… secret signing run-completion webhooks",
    )


class DeliverySettings(_RetrySchedule, _Group):
    """Event deliveries to subscribers."""

    model_config = SettingsConfigDict(env_prefix="FERRYMAN_DELIVERY_")

    subscriptions_file: Path | None = Field(
        default=None,
        validation_alias="FERRYMAN_SUBSCRIPTIONS_FILE",
        description="YAML/JSON file of subscriptions, re-read when it changes",
    )
    timeout: float = Field(default=10.0, gt=0, le=300, description="Per-request timeout")
    retry_schedule: str = Field(
        default=WEBHOOK_SCHEDULE, description="Waits between attempts; the last repeats"
    )
    max_attempts: int | None = Field(
        default=None, ge=1, description="Attempts before dead-letter (default: no limit, by age)"
    )
    max_age: float = Field(
        default=86400.0, gt=0, description="Seconds of retrying before dead-letter"
    )
    backoff: float | None = Field(
        default=None, gt=0, description="First delay of an exponential schedule instead"
    )
    max_backoff: float | None = Field(
        default=None, gt=0, description="Cap of the exponential schedule and of Retry-After"
    )
    concurrency: int = Field(
        default=256, ge=1, le=10000, description="Event deliveries in flight per server"
    )
    per_subscriber: int = Field(
        default=16, ge=1, le=1000, description="Deliveries in flight per subscriber"
    )


class SlackSettings(_Group):
    """Slack: messages ferryman posts, and the Slack bot."""

    model_config = SettingsConfigDict(env_prefix="FERRYMAN_SLACK_")

    bot_token: SecretStr | None = Field(default=None, description="Slack bot token (xoxb-…)")
    api_url: str = Field(default="https://slack.com/api/", description="Slack Web API base URL")
    # -- the Slack bot (on when the bot token and the signing secret are set) --
    signing_secret: SecretStr | None = Field(
        default=None, repr=False, description="Verifies Slack's requests to /slack/events"
    )
    namespace: str = Field(default="default", description="Namespace of the bot's pipelines")
    channels: str | None = Field(
        default=None,
        description="Channel ids (comma-separated) the bot answers in; unset: every channel "
        "it is in (direct messages are always answered)",
    )
    unknown_user_role: str | None = Field(
        default=None,
        description="Role given to Slack users who map to no ferryman user (unset: refused)",
    )
    update_seconds: float = Field(
        default=5.0, gt=0, le=3600, description="At most one chat.update per run message this often"
    )

    @field_validator("unknown_user_role")
    @classmethod
    def _role(cls, value: str | None) -> str | None:
        roles = ("viewer", "operator", "developer", "admin")
        if value is not None and value not in roles:
            raise ValueError(f"{value!r} is not a role ({', '.join(roles)})")
        return value

    @property
    def bot_enabled(self) -> bool:
        """The bot is on when both the token and the signing secret are set."""
        return self.bot_token is not None and self.signing_secret is not None

    def channel_allowed(self, channel: str | None) -> bool:
        """Whether the bot answers in ``channel`` (direct messages: always)."""
        if not self.channels or (channel or "").startswith("D"):
            return True
        return (channel or "") in {c.strip() for c in self.channels.split(",") if c.strip()}


class SecuritySettings(_Group):
    """Secrets at rest and where ferryman may send requests."""

    secret_key: SecretStr | None = Field(
        default=None,
        repr=False,
        description="Encrypts stored secrets (subscription secrets and header values); "
        "several keys comma-separated: the first encrypts, all decrypt (rotation). Default: "
        "generated once per home (FERRYMAN_HOME/secret_key); required in production on PostgreSQL",
    )
    outbound_allow_networks: str | None = Field(
        default=None,
        description="Networks (comma-separated CIDRs) webhooks and subscriptions may reach "
        "although they are private, loopback or link-local (production refuses them otherwise)",
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


class SchedulerSettings(_Group):
    """The scheduler: the loop that fires schedules' ticks (docs/schedules.md)."""

    scheduler_enabled: bool = Field(
        default=True, description="Run the scheduler inside `ferryman server`"
    )
    scheduler_poll_seconds: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="Longest sleep between looks at the schedules (a change wakes it sooner)",
    )
    scheduler_late_seconds: float = Field(
        default=60.0,
        gt=0,
        description="A tick due longer ago than this was missed (the catch-up policy decides); "
        "younger ones fire whatever the policy",
    )
    scheduler_batch: int = Field(
        default=500, ge=1, le=100_000, description="Schedules handled per turn"
    )


#: The secret resolvers ``FERRYMAN_SECRETS_RESOLVERS`` may name.
SECRET_RESOLVER_KINDS = ("env", "file", "kubernetes", "store")


class SecretsSettings(_Group):
    """Where the secrets steps declare are resolved (``FERRYMAN_SECRETS_*``)."""

    model_config = SettingsConfigDict(env_prefix="FERRYMAN_SECRETS_")

    resolvers: str = Field(
        default="env,store",
        description="Secret resolvers in order, comma-separated (env, file, kubernetes, "
        "store); a secret's value comes from the first that holds it",
    )
    dir: Path | None = Field(
        default=None, description="The file resolver's directory: one file per secret"
    )
    k8s_namespace: str = Field(
        default="default", description="Namespace of the kubernetes resolver's Secret"
    )
    k8s_secret: str = Field(
        default="ferryman-secrets",
        description="The Kubernetes Secret whose keys the kubernetes resolver reads",
    )

    @field_validator("resolvers")
    @classmethod
    def _resolvers(cls, value: str) -> str:
        kinds = [k.strip() for k in value.split(",") if k.strip()]
        unknown = [k for k in kinds if k not in SECRET_RESOLVER_KINDS]
        if unknown:
            raise ValueError(
                f"unknown secret resolver(s) {', '.join(unknown)} "
                f"(choose from {', '.join(SECRET_RESOLVER_KINDS)})"
            )
        if len(set(kinds)) != len(kinds):
            raise ValueError("a secret resolver is named twice")
        return ",".join(kinds)

    @model_validator(mode="after")
    def _file_needs_dir(self) -> SecretsSettings:
        if "file" in self.order and self.dir is None:
            raise ValueError("the file secret resolver needs FERRYMAN_SECRETS_DIR")
        return self

    @property
    def order(self) -> list[str]:
        """The resolvers' kinds, in order."""
        return [k for k in self.resolvers.split(",") if k]


class PluginSettings(_Group):
    """Web-API plugins (task steps): their limits, per plugin id (docs/plugins.md)."""

    plugins_config: Path | None = Field(
        default=None,
        description="A YAML or JSON file of limits per plugin id ({http_job: {read_qps: 30}})",
    )
    plugin_limits: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Limits per plugin id as JSON; wins over the file "
        '(e.g. {"http_job": {"write_qps": 20, "max_concurrent": 50}})',
    )


#: The groups of ``Settings``: attribute name -> group class. A new group (the
#: scheduler's, plugins', retention's, metrics') is one class and one line here.
GROUPS: dict[str, type[_Group]] = {
    "database": DatabaseSettings,
    "loops": LoopSettings,
    "worker": WorkerSettings,
    "api": ApiSettings,
    "login": LoginSettings,
    "callbacks": CallbackSettings,
    "delivery": DeliverySettings,
    "slack": SlackSettings,
    "security": SecuritySettings,
    "scheduler": SchedulerSettings,
    "secrets": SecretsSettings,
    "plugins": PluginSettings,
}


def variable_name(group: type[_Group], field: str) -> str:
    """The ``FERRYMAN_*`` variable a group's field is read from."""
    alias = group.model_fields[field].validation_alias
    if isinstance(alias, str):
        return alias
    return (str(group.model_config.get("env_prefix", "FERRYMAN_")) + field).upper()


def _setting_names() -> dict[str, tuple[str, str]]:
    # A setting's name is its variable's, without FERRYMAN_ and in lower case:
    # lease_seconds, callback_timeout, database_url …
    names: dict[str, tuple[str, str]] = {}
    for attr, group in GROUPS.items():
        for field in group.model_fields:
            names[variable_name(group, field)[len("FERRYMAN_") :].lower()] = (attr, field)
    return names


#: setting name -> (group attribute, field)
SETTING_NAMES: dict[str, tuple[str, str]] = _setting_names()


class Settings(BaseSettings):
    """Every setting, in groups (``settings.worker.lease_seconds``,
    ``settings.callbacks.timeout`` …), each read from its ``FERRYMAN_<NAME>``
    variable (``FERRYMAN_LEASE_SECONDS``, ``FERRYMAN_CALLBACK_TIMEOUT`` …).

    Built with keyword arguments, a setting is given by its name: the
    variable's name without ``FERRYMAN_``, in lower case
    (``Settings(lease_seconds=5, callback_timeout=1)``); every setting not
    given is read from the environment, as always.
    """

    model_config = SettingsConfigDict(env_prefix="FERRYMAN_", extra="ignore")

    home: Path = Field(default=Path("~/.ferryman"), description="Where embedded state lives")
    env: Literal["development", "production"] = Field(
        default="development", description="production refuses weak or missing secrets"
    )
    database: DatabaseSettings
    loops: LoopSettings
    worker: WorkerSettings
    api: ApiSettings
    login: LoginSettings
    callbacks: CallbackSettings
    delivery: DeliverySettings
    slack: SlackSettings
    security: SecuritySettings
    scheduler: SchedulerSettings
    secrets: SecretsSettings
    plugins: PluginSettings

    @model_validator(mode="before")
    @classmethod
    def _groups(cls, data: Any) -> Any:
        """Route settings given by name into their groups; build each group
        (which reads its variables from the environment for the rest)."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        given: dict[str, dict[str, Any]] = {attr: {} for attr in GROUPS}
        unknown = []
        for key in list(data):
            if key in GROUPS or key in cls.model_fields:
                continue
            where = SETTING_NAMES.get(key)
            if where is None:
                unknown.append(key)
                continue
            given[where[0]][where[1]] = data.pop(key)
        if unknown:
            raise ValueError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        for attr, group in GROUPS.items():
            value = data.get(attr)
            if isinstance(value, group):
                if given[attr]:
                    data[attr] = value.model_copy(update=given[attr])
            elif isinstance(value, dict):
                data[attr] = group(**{**value, **given[attr]})
            else:
                data[attr] = group(**given[attr])
        return data

    @model_validator(mode="after")
    def _derive(self) -> Settings:
        self.home = self.home.expanduser()
        return self

    def updated(self, **changes: Any) -> Settings:
        """A copy with the settings named in ``changes`` replaced (by name, as
        in the constructor: ``settings.updated(lease_seconds=1)``); validated."""
        data: dict[str, Any] = {"home": self.home, "env": self.env}
        for attr in GROUPS:
            data[attr] = getattr(self, attr).model_dump()
        for key, value in changes.items():
            if key in ("home", "env"):
                data[key] = value
                continue
            where = SETTING_NAMES.get(key)
            if where is None:
                raise ValueError(f"unknown setting {key!r}")
            data[where[0]][where[1]] = value
        return Settings.model_validate(
            {k: GROUPS[k].model_validate(v) if k in GROUPS else v for k, v in data.items()}
        )

    @classmethod
    def variables(cls) -> dict[str, tuple[str, str]]:
        """Every ``FERRYMAN_*`` variable of a setting -> (group attribute, field);
        ``home`` and ``env`` as ("", name)."""
        out = {f"FERRYMAN_{name.upper()}": ("", name) for name in ("home", "env")}
        for attr, group in GROUPS.items():
            for field in group.model_fields:
                out[variable_name(group, field)] = (attr, field)
        return out

    def check_production(self) -> None:
        """Refuse to serve in production without a strong, configured secret.

        In development an unset secret is generated per home; in production
        it must be set: several servers (on several machines, sharing one
        PostgreSQL) must all sign with the same one, and it must be strong.
        """
        if self.env != "production":
            return
        if self.api.jwt_secret is None:
            raise ValueError(
                "FERRYMAN_ENV=production needs FERRYMAN_JWT_SECRET set (the same value on "
                f"several servers sharing a database): {JWT_SECRET_RULE}"
            )
        self.check_jwt_secret(self.api.jwt_secret.get_secret_value())
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
        key_setting = self.security.secret_key
        if key_setting is None:
            if self.env == "production" and self.db_url.startswith("postgresql"):
                raise ValueError(
                    "FERRYMAN_ENV=production on PostgreSQL needs FERRYMAN_SECRET_KEY set (the "
                    "same value on every server and worker sharing the database): "
                    + JWT_SECRET_RULE.replace("`", "")
                )
            return
        for i, key in enumerate(key_setting.get_secret_value().split(",")):
            try:
                self.check_jwt_secret(key.strip())
            except ValueError as exc:
                which = "FERRYMAN_SECRET_KEY" + (f" (key {i + 1})" if i else "")
                raise ValueError(str(exc).replace("FERRYMAN_JWT_SECRET", which)) from None

    @property
    def base_url(self) -> str:
        """The server's address in links: FERRYMAN_PUBLIC_URL, or http://HOST:PORT."""
        return (self.api.public_url or f"http://{self.api.host}:{self.api.port}").rstrip("/")

    @property
    def db_url(self) -> str:
        """The database: FERRYMAN_DATABASE_URL, or SQLite under FERRYMAN_HOME."""
        if self.database.url:
            return self.database.url
        return f"sqlite:///{self.home / 'ferryman.db'}"

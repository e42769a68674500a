"""Database tables (SQLAlchemy Core). The Alembic migrations create exactly these."""

from __future__ import annotations

import datetime as dt
import os
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect

from ferryman.secret_box import NoKey, SecretBox


class UTCDateTime(sa.TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive UTC)."""

    impl = sa.DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(sa.DateTime(timezone=True))
        return dialect.type_descriptor(sa.DateTime())

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use UTC-aware datetimes")
        value = value.astimezone(dt.UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)  # type: ignore[no-any-return]
        return value.astimezone(dt.UTC)  # type: ignore[no-any-return]


JSONType = sa.JSON().with_variant(JSONB(), "postgresql")

#: The attribute of an engine's dialect holding its store's ``SecretBox``:
#: column types see only the dialect, and each engine has its own.
BOX_ATTRIBUTE = "ferryman_secret_box"


def box_of(dialect: Dialect) -> SecretBox:
    """The secret box of the store whose engine has this dialect."""
    box = getattr(dialect, BOX_ATTRIBUTE, None)
    return box if isinstance(box, SecretBox) else NoKey()


class Sealed(sa.TypeDecorator[str]):
    """Text stored encrypted by the store's ``SecretBox`` (``fmbox1:…``);
    reads give the plain text back (a value never sealed, as it is)."""

    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else box_of(dialect).seal(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else box_of(dialect).open(value)


class SealedValues(sa.TypeDecorator[dict[str, str]]):
    """A JSON object of texts whose values are stored sealed (its keys stay
    readable: header names are not secret, their values often are)."""

    impl = sa.JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(JSONB())
        return dialect.type_descriptor(sa.JSON())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        box = box_of(dialect)
        return {k: box.seal(str(v)) for k, v in value.items()}

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        box = box_of(dialect)
        return {k: box.open(v) if isinstance(v, str) else v for k, v in value.items()}


metadata = sa.MetaData()


def exists_on(obj: Any, dialect: str) -> bool:
    """False for schema items restricted to another dialect (``ddl_if``);
    Alembic's comparisons use it to skip, e.g., PostgreSQL-only indexes on SQLite."""
    only = getattr(obj, "_ddl_if", None)
    return only is None or only.dialect in (None, dialect)


def new_id() -> str:
    """A time-ordered 128-bit id as 32 hex digits (UUIDv7 layout)."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms << 80) | (0x7 << 76) | (rand & ((1 << 76) - 1))
    value = (value & ~(0xC << 60)) | (0x8 << 60)  # RFC 4122 variant bits
    return f"{value:032x}"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


pipelines = sa.Table(
    "pipelines",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("namespace", sa.String(128), nullable=False),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("namespace", "name", name="uq_pipelines_ns_name"),
)

pipeline_versions = sa.Table(
    "pipeline_versions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "pipeline_id", sa.Integer, sa.ForeignKey("pipelines.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("version", sa.String(64), nullable=False),
    sa.Column("spec", JSONType, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("pipeline_id", "version", name="uq_pipeline_versions"),
)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    # a readable handle, unique per namespace (domain.run_names)
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("namespace", sa.String(128), nullable=False),
    sa.Column("pipeline", sa.String(128), nullable=False),
    sa.Column(
        "pipeline_version_id", sa.Integer, sa.ForeignKey("pipeline_versions.id"), nullable=False
    ),
    sa.Column("version", sa.String(64), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("params", JSONType, nullable=False),
    sa.Column("labels", JSONType, nullable=False),
    sa.Column("idempotency_key", sa.String(255), nullable=True),
    sa.Column("nodes_total", sa.Integer, nullable=False),
    sa.Column("nodes_remaining", sa.Integer, nullable=False),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, default=False),
    sa.Column("cancel_reason", sa.String(64), nullable=True),
    sa.Column("failed_node", sa.String(128), nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("deadline", UTCDateTime, nullable=True),
    sa.Column("rerun_of", sa.String(32), nullable=True),
    sa.Column("trigger", JSONType, nullable=True),
    sa.Column("options", JSONType, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=True),
    sa.Column("ended_at", UTCDateTime, nullable=True),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("namespace", "idempotency_key", name="uq_runs_idempotency"),
    # name first: it also finds a run by name alone (``runs get brave-otter-42``)
    sa.UniqueConstraint("name", "namespace", name="uq_runs_name"),
    sa.Index("ix_runs_ns_created", "namespace", "created_at"),
    sa.Index("ix_runs_state", "state"),
    sa.Index("ix_runs_pipeline", "namespace", "pipeline", "created_at"),
)
# Label filters (``labels @> {...}``) on PostgreSQL; SQLite has no GIN.
sa.Index(
    "ix_runs_labels_gin",
    runs.c.labels,
    postgresql_using="gin",
    postgresql_ops={"labels": "jsonb_path_ops"},
).ddl_if(dialect="postgresql")

nodes = sa.Table(
    "nodes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "run_id", sa.String(32), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False, default=0),
    sa.Column("max_attempts", sa.Integer, nullable=False),
    sa.Column("waiting_on", sa.Integer, nullable=False),
    sa.Column("ready_at", UTCDateTime, nullable=True),
    sa.Column("worker_id", sa.String(128), nullable=True),
    sa.Column("lease_expires_at", UTCDateTime, nullable=True),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, default=False),
    sa.Column("infra_kind", sa.String(64), nullable=True),
    sa.Column("infra_id", sa.String(255), nullable=True),
    # the attempt's result-line nonce, so a worker re-attaching to a container
    # or job started by a lost worker can still read the step's result
    sa.Column("launch_nonce", sa.String(64), nullable=True),
    sa.Column("output", JSONType, nullable=True),
    sa.Column("has_output", sa.Boolean, nullable=False, default=False),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("exit_code", sa.Integer, nullable=True),
    sa.Column("reused", sa.Boolean, nullable=False, default=False),
    sa.Column("started_at", UTCDateTime, nullable=True),
    sa.Column("ended_at", UTCDateTime, nullable=True),
    sa.UniqueConstraint("run_id", "name", name="uq_nodes_run_name"),
    sa.Index("ix_nodes_claim", "state", "ready_at"),
    sa.Index("ix_nodes_worker", "worker_id", "state"),
    sa.Index("ix_nodes_ready", "run_id", "state", "waiting_on"),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(32), nullable=False, unique=True),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("time", UTCDateTime, nullable=False),
    sa.Column("namespace", sa.String(128), nullable=False),
    sa.Column("pipeline", sa.String(128), nullable=False),
    sa.Column("pipeline_version", sa.String(64), nullable=False),
    sa.Column("run_id", sa.String(32), nullable=False),
    sa.Column("node", sa.String(128), nullable=True),
    sa.Column("attempt", sa.Integer, nullable=True),
    sa.Column("message", sa.Text, nullable=False, default=""),
    sa.Column("labels", JSONType, nullable=False),
    sa.Column("data", JSONType, nullable=False),
    sa.Index("ix_events_run", "run_id", "seq"),
)

logs = sa.Table(
    "logs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(32), nullable=False),
    sa.Column("node", sa.String(128), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("stream", sa.String(8), nullable=False),
    sa.Column("line", sa.Text, nullable=False),
    sa.Column("time", UTCDateTime, nullable=False),
    sa.Index("ix_logs_run", "run_id", "id"),
)

workers = sa.Table(
    "workers",
    metadata,
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("hostname", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("heartbeat_at", UTCDateTime, nullable=False),
    sa.Column("stopped_at", UTCDateTime, nullable=True),
)

users = sa.Table(
    "users",
    metadata,
    # AUTOINCREMENT on SQLite: a deleted user's id is never handed out again
    # (PostgreSQL sequences never go back anyway).
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    # Random, permanent, never reused: what API tokens are bound to.
    sa.Column("uid", sa.String(32), nullable=False),
    sa.Column("username", sa.String(128), nullable=False, unique=True),
    sa.Column("password_hash", sa.String(255), nullable=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("slack_user_id", sa.String(64), nullable=True, unique=True),
    sa.Column("disabled", sa.Boolean, nullable=False, default=False),
    # Random; every access token (JWT) carries it. Replaced when the password
    # changes or the user is disabled, which ends every earlier JWT for good.
    sa.Column("session_key", sa.String(32), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("uid", name="uq_users_uid"),
    sqlite_autoincrement=True,
)

api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    # users.uid of the token's user: checked on every use.
    sa.Column("user_uid", sa.String(32), nullable=False),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("token_hash", sa.String(128), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=True),
    sa.Column("last_used_at", UTCDateTime, nullable=True),
    sa.Column("revoked_at", UTCDateTime, nullable=True),
)

# Failed logins per (username, client address): counted before the password
# is checked, by one guarded UPDATE. Unknown usernames are counted the same
# way, so a lock says nothing about which accounts exist. A success deletes
# the row; rows idle for a day are pruned.
login_failures = sa.Table(
    "login_failures",
    metadata,
    sa.Column("username", sa.String(128), primary_key=True),
    sa.Column("address", sa.String(64), primary_key=True),
    sa.Column("failures", sa.Integer, nullable=False),
    sa.Column("locked_until", UTCDateTime, nullable=True),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Index("ix_login_failures_updated", "updated_at"),
)

callbacks = sa.Table(
    "callbacks",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column(
        "run_id", sa.String(32), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("target", JSONType, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("next_attempt_at", UTCDateTime, nullable=False),
    sa.Column("last_status", sa.Integer, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("delivered_at", UTCDateTime, nullable=True),
    sa.Index("ix_callbacks_due", "state", "next_attempt_at"),
    sa.Index("ix_callbacks_run", "run_id"),
)

# Event triggers: one row per (triggered pipeline, trigger, state), written when
# the triggered pipeline is registered; looked up by source when a run ends.
pipeline_triggers = sa.Table(
    "pipeline_triggers",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("target_namespace", sa.String(128), nullable=False),
    sa.Column("target_pipeline", sa.String(128), nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("source_namespace", sa.String(128), nullable=False),
    sa.Column("source_pipeline", sa.String(128), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("spec", JSONType, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint(
        "target_namespace", "target_pipeline", "position", "state", name="uq_pipeline_triggers"
    ),
    sa.Index("ix_pipeline_triggers_source", "source_namespace", "source_pipeline", "state"),
)

# What each trigger did for each triggering run: the run it created, or why
# it created none. Unique per (triggering run, trigger): exactly once.
trigger_firings = sa.Table(
    "trigger_firings",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column(
        "source_run_id", sa.String(32), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("event_id", sa.String(32), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("target_namespace", sa.String(128), nullable=False),
    sa.Column("target_pipeline", sa.String(128), nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("run_id", sa.String(32), nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint(
        "source_run_id",
        "target_namespace",
        "target_pipeline",
        "position",
        name="uq_trigger_firings",
    ),
)

# -- issue 4: event subscriptions and their durable deliveries -----------------------

subscriptions = sa.Table(
    "subscriptions",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(128), nullable=False, unique=True),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("format", sa.String(64), nullable=False),
    sa.Column("event_types", JSONType, nullable=False),
    sa.Column("namespaces", JSONType, nullable=False),
    sa.Column("pipelines", JSONType, nullable=False),
    sa.Column("labels", JSONType, nullable=False),
    # The HMAC key must be readable to sign; it is stored encrypted (the
    # header values too) and never returned or logged.
    sa.Column("secret", Sealed, nullable=False),
    sa.Column("headers", SealedValues, nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False, default=True),
    sa.Column("disabled_reason", sa.Text, nullable=True),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

# One row (id 1): bumped by every change of ``subscriptions``, so a process can
# keep the enabled subscriptions in memory and know for certain when to reload.
subscription_generation = sa.Table(
    "subscription_generation",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("generation", sa.Integer, nullable=False),
)

#: Rows the migrations insert (schema data, not user data): a database created
#: from the metadata (``Store.create_schema``) gets them too.
SEED_ROWS: list[tuple[sa.Table, list[dict[str, Any]]]] = [
    (subscription_generation, [{"id": 1, "generation": 0}]),
]

deliveries = sa.Table(
    "deliveries",
    metadata,
    # Insertion order = event order: the per (subscription, run) delivery order.
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "subscription_id",
        sa.String(32),
        sa.ForeignKey("subscriptions.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("event_id", sa.String(32), nullable=False),
    sa.Column("run_id", sa.String(32), nullable=False),
    sa.Column("event_type", sa.String(32), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("next_attempt_at", UTCDateTime, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("queued_at", UTCDateTime, nullable=False),
    sa.Column("delivered_at", UTCDateTime, nullable=True),
    sa.Column("last_status", sa.Integer, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.UniqueConstraint("subscription_id", "event_id", name="uq_deliveries_sub_event"),
    # A claim reads each subscription's oldest due rows: an index range scan.
    sa.Index("ix_deliveries_due", "subscription_id", "state", "next_attempt_at", "id"),
    # Ordering checks (an older pending one of the same subscription and run?):
    # run_id first, so no planner, whatever its statistics, prefers another index.
    sa.Index("ix_deliveries_order", "run_id", "subscription_id", "state", "id"),
)

delivery_attempts = sa.Table(
    "delivery_attempts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "delivery_id",
        sa.Integer,
        sa.ForeignKey("deliveries.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("time", UTCDateTime, nullable=False),
    sa.Column("status", sa.Integer, nullable=True),
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("response", sa.Text, nullable=True),
    sa.Index("ix_delivery_attempts_delivery", "delivery_id", "id"),
)

# -- the Slack bot (issue 14) ------------------------------------------------------

slack_commands = sa.Table(
    # Every command the Slack bot received: who, where, what, and what came of
    # it (the audit), and the Slack event's key, unique, so that Slack's
    # retries and duplicate deliveries are answered once.
    "slack_commands",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("event_key", sa.String(255), nullable=False, unique=True),
    sa.Column("slack_user", sa.String(64), nullable=False),
    sa.Column("slack_channel", sa.String(64), nullable=True),
    sa.Column("username", sa.String(128), nullable=True),
    sa.Column("command", sa.String(64), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("outcome", sa.String(32), nullable=True),
    sa.Column("detail", sa.Text, nullable=True),
    sa.Column("run_id", sa.String(32), nullable=True),
    sa.Column("error_id", sa.String(32), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("finished_at", UTCDateTime, nullable=True),
    sa.Index("ix_slack_commands_created", "created_at"),
)

slack_messages = sa.Table(
    # The bot's message about a run (channel, ts), kept current with
    # chat.update while the run progresses: what it last showed and when.
    "slack_messages",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(32), nullable=False),
    sa.Column("channel", sa.String(64), nullable=False),
    sa.Column("ts", sa.String(64), nullable=False),
    sa.Column("shown", sa.String(255), nullable=False),
    sa.Column("done", sa.Boolean, nullable=False, default=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("channel", "ts", name="uq_slack_messages_message"),
    sa.Index("ix_slack_messages_open", "done", "run_id"),
)

# -- issue 13: schedules and their ticks ---------------------------------------------

schedules = sa.Table(
    "schedules",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("namespace", sa.String(128), nullable=False),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("pipeline", sa.String(128), nullable=False),
    # The ScheduleSpec as JSON (domain/schedules.py); paused is a column too.
    sa.Column("spec", JSONType, nullable=False),
    sa.Column("paused", sa.Boolean, nullable=False, default=False),
    # "api" (API, CLI, client) or "pipeline" (declared by a pipeline, reconciled on deploy)
    sa.Column("source", sa.String(16), nullable=False),
    # Every tick at or before the cursor has been decided (fired, missed, ...).
    sa.Column("cursor", UTCDateTime, nullable=False),
    # When the next undecided tick is due (NULL: never again): the scheduler's index.
    sa.Column("next_due_at", UTCDateTime, nullable=True),
    sa.Column("buffered", sa.Integer, nullable=False, default=0),
    sa.Column("created_by", sa.String(128), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("namespace", "name", name="uq_schedules_name"),
    sa.Index("ix_schedules_due", "paused", "next_due_at"),
)

schedule_ticks = sa.Table(
    "schedule_ticks",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "schedule_id",
        sa.String(32),
        sa.ForeignKey("schedules.id", ondelete="CASCADE"),
        nullable=False,
    ),
    # The tick in UTC: claimed once, in the transaction that creates its run.
    sa.Column("fire_time", UTCDateTime, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("run_id", sa.String(32), nullable=True),
    sa.Column("reason", sa.Text, nullable=True),
    # "schedule" (the scheduler), "backfill" or "manual" (run now)
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("schedule_id", "fire_time", name="uq_schedule_ticks_time"),
    sa.Index("ix_schedule_ticks_state", "schedule_id", "state", "fire_time"),
)

# Values of ferryman's own secret store (``ferryman secrets set``): sealed by
# the store's SecretBox, never returned by the API or the CLI; resolved for a
# step that declares the name, at dispatch.
stored_secrets = sa.Table(
    "stored_secrets",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("value", Sealed, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("updated_by", sa.String(128), nullable=True),
)

# The run lease of a run executed inside a CLI process (``ferryman run``,
# ``ferryman runs rerun``): renewed with that process's heartbeats; once it
# has expired, the process is gone and the next ferryman command on the
# database ends the run (``services/run_leases.py``).
run_leases = sa.Table(
    "run_leases",
    metadata,
    sa.Column(
        "run_id", sa.String(32), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True
    ),
    # the id of the embedded worker of the process (its nodes' worker_id)
    sa.Column("holder", sa.String(128), nullable=False),
    # what ran it, for the run's error: "ferryman run", "ferryman runs rerun"
    sa.Column("command", sa.String(64), nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Index("ix_run_leases_holder", "holder"),
    sa.Index("ix_run_leases_expires", "expires_at"),
)

# -- web-API plugins (issue 15): what must outlive a worker and be shared by all --

#: One row per task attempt that reached its plugin: the resource meta
#: ``create`` returned (null until then), what an adopting worker needs
#: (``context``, no secret values), a pending delete and the state message.
task_resources = sa.Table(
    "task_resources",
    metadata,
    sa.Column("key", sa.String(255), primary_key=True),  # the idempotency key
    sa.Column("plugin", sa.String(100), nullable=False),
    sa.Column("run_id", sa.String(32), nullable=False),
    sa.Column("node", sa.String(128), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("context", JSONType, nullable=True),
    sa.Column("meta", JSONType, nullable=True),
    sa.Column("message", sa.Text, nullable=True),
    sa.Column("delete_reason", sa.Text, nullable=True),
    sa.Column("done", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Index("ix_task_resources_pending", "done", "delete_reason"),
    sa.Index("ix_task_resources_run", "run_id", "node"),
)

#: Token buckets of the plugins' rate limiters, shared by all workers:
#: ``tokens`` as of ``updated`` (seconds since the epoch, the database's clock
#: on PostgreSQL).
plugin_buckets = sa.Table(
    "plugin_buckets",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("tokens", sa.Float, nullable=False),
    sa.Column("updated", sa.Float, nullable=False),
)

#: Quotas: places in use per quota key (changed by one guarded UPDATE) and who
#: holds them (so a release is counted once and an adopted attempt keeps its place).
plugin_quotas = sa.Table(
    "plugin_quotas",
    metadata,
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("in_use", sa.Integer, nullable=False, default=0),
)

plugin_quota_holders = sa.Table(
    "plugin_quota_holders",
    metadata,
    sa.Column("holder", sa.String(255), primary_key=True),
    sa.Column("quota_key", sa.String(200), nullable=False),
    sa.Column("acquired_at", UTCDateTime, nullable=False),
)

#: Counters per plugin (creates, gets, deletes, throttled waits, system
#: failures, quota waits), flushed by each worker every few seconds.
plugin_counters = sa.Table(
    "plugin_counters",
    metadata,
    sa.Column("plugin", sa.String(100), primary_key=True),
    sa.Column("counter", sa.String(64), primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False, default=0),
)

"""What a caller asks of one run besides its parameters (``RunOptions``), and
how the run was started (``Origin``).

Both are stored with the run as JSON (``runs.options``, ``runs.trigger``)
holding only what was given: ``stored()`` omits every field left unset, and
``from_stored()`` reads any row written since these columns exist.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Stored(BaseModel):
    """A frozen model stored as JSON with only the fields that were given."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def stored(self) -> dict[str, Any]:
        """The JSON stored with the run: the fields given, nothing else."""
        return self.model_dump(mode="json", exclude_unset=True, exclude_none=True)

    @classmethod
    def _known(cls, raw: Mapping[str, Any]) -> dict[str, Any]:
        # A key this version does not know (a newer writer) is ignored rather
        # than making the run unreadable.
        return {k: v for k, v in raw.items() if k in cls.model_fields}


class RunOptions(_Stored):
    """How to run a run and whom to tell when it ends.

    Built by the interfaces (``RunCreate.options()``, ``ferryman run``), read
    by the engine (infrastructure, overrides, timeout) and by the completion
    callbacks (webhook, Slack). Frozen; a new option is a new field here.
    """

    timeout: float | None = Field(
        default=None, description="Run timeout in seconds (instead of the pipeline's)"
    )
    infrastructure: str | None = Field(
        default=None, description="Run every step on this infrastructure kind"
    )
    infra_overrides: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Per step name: infrastructure overrides"
    )
    webhook_url: str | None = Field(default=None, description="POSTed a report at the end")
    webhook_format: str | None = Field(
        default=None,
        description="The webhook body's shape: ferryman's report (unset) or 'compat' "
        "(the replaced pipeline-run API's)",
    )
    slack_channel: str | None = Field(default=None, description="Told at the end")
    slack_thread: str | None = Field(default=None, description="Thread (ts) in slack_channel")
    slack_attach_log: bool | None = Field(
        default=None, description="On failure, attach the failed step's log to the Slack message"
    )

    @classmethod
    def from_stored(cls, raw: Mapping[str, Any] | None) -> RunOptions:
        """The options of a stored run (``runs.options``; NULL or ``{}``: none)."""
        return cls.model_validate(cls._known(raw)) if raw else NO_OPTIONS

    def overrides_for(self, step: str) -> dict[str, Any]:
        """The infrastructure overrides given for ``step`` (empty if none)."""
        return self.infra_overrides.get(step, {})


NO_OPTIONS = RunOptions()


class Origin(_Stored):
    """How a run was started, stored as the run's ``trigger``.

    ``kind`` is the interface: ``api``, ``compat`` (the compatibility route),
    ``event`` (an event trigger), and later ``slack``, ``schedule``...; ``user``
    who asked, when known. A run started by an event trigger also records the
    run whose end fired it (``run_id``, ``namespace``, ``pipeline``, ``state``,
    ``event_id``), its level in the trigger chain (``depth``) and which of the
    target pipeline's triggers fired (``trigger``, its position). A run
    started by a schedule (``kind="schedule"``, ``"backfill"`` or ``"manual"``)
    records the schedule's name (``schedule``) and its tick (``tick``, UTC ISO).
    """

    kind: str
    user: str | None = None
    run_id: str | None = None
    namespace: str | None = None
    pipeline: str | None = None
    state: str | None = None
    event_id: str | None = None
    depth: int | None = None
    trigger: int | None = None
    schedule: str | None = None
    tick: str | None = None

    @classmethod
    def from_stored(cls, raw: Mapping[str, Any] | None) -> Origin | None:
        """The origin of a stored run (``runs.trigger``), None when not recorded."""
        if not raw or "kind" not in raw:
            return None
        return cls.model_validate(cls._known(raw))

    def stored(self) -> dict[str, Any]:
        """The JSON stored with the run; ``user`` stays even when unknown (null)."""
        return self.model_dump(mode="json", exclude_unset=True)

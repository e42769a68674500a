"""Event types and the envelope every subscriber receives."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from ferryman.domain.states import NodeState, RunState


class EventType(StrEnum):
    """Every kind of event ferryman records (one per state transition)."""

    RUN_QUEUED = "RunQueued"
    RUN_RUNNING = "RunRunning"
    RUN_SUCCEEDED = "RunSucceeded"
    RUN_FAILED = "RunFailed"
    RUN_CANCELLED = "RunCancelled"
    NODE_QUEUED = "NodeQueued"
    NODE_RUNNING = "NodeRunning"
    NODE_SUCCEEDED = "NodeSucceeded"
    NODE_FAILED = "NodeFailed"
    NODE_RETRYING = "NodeRetrying"
    NODE_SKIPPED = "NodeSkipped"
    NODE_CANCELLED = "NodeCancelled"
    # A running step waits for something outside ferryman (a plugin's quota);
    # no state change: written once when the wait starts.
    NODE_WAITING = "NodeWaiting"
    # A schedule's tick that started no run (its ``run_id`` is the schedule's id).
    SCHEDULE_TICK_MISSED = "ScheduleTickMissed"
    SCHEDULE_TICK_SKIPPED = "ScheduleTickSkipped"
    SCHEDULE_TICK_FAILED = "ScheduleTickFailed"


RUN_EVENT: dict[RunState, EventType] = {
    RunState.QUEUED: EventType.RUN_QUEUED,
    RunState.RUNNING: EventType.RUN_RUNNING,
    RunState.SUCCEEDED: EventType.RUN_SUCCEEDED,
    RunState.FAILED: EventType.RUN_FAILED,
    RunState.CANCELLED: EventType.RUN_CANCELLED,
}

NODE_EVENT: dict[NodeState, EventType] = {
    NodeState.QUEUED: EventType.NODE_QUEUED,
    NodeState.RUNNING: EventType.NODE_RUNNING,
    NodeState.SUCCEEDED: EventType.NODE_SUCCEEDED,
    NodeState.FAILED: EventType.NODE_FAILED,
    NodeState.RETRYING: EventType.NODE_RETRYING,
    NodeState.SKIPPED: EventType.NODE_SKIPPED,
    NodeState.CANCELLED: EventType.NODE_CANCELLED,
}


class EventEnvelope(BaseModel):
    """What a subscriber receives for one event (SPEC §4)."""

    id: str
    seq: int = Field(description="Monotonic position in the event log")
    type: EventType
    time: datetime
    namespace: str
    pipeline: str
    pipeline_version: str
    run_id: str
    node: str | None = None
    attempt: int | None = None
    message: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    data: dict[str, Any] = Field(default_factory=dict)

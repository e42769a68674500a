"""Run and node states, and the table of legal transitions.

The tables here are the single source of truth for what may move where; the
run service's transition gate derives its guarded ``UPDATE ... WHERE state IN``
clauses from them.
"""

from __future__ import annotations

from enum import StrEnum


class RunState(StrEnum):
    """Lifecycle of a run."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in RUN_TERMINAL


class NodeState(StrEnum):
    """Lifecycle of one step (node) of a run."""

    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in NODE_TERMINAL


RUN_TERMINAL = frozenset({RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED})
NODE_TERMINAL = frozenset(
    {NodeState.SUCCEEDED, NodeState.FAILED, NodeState.SKIPPED, NodeState.CANCELLED}
)

RUN_TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    RunState.QUEUED: frozenset({RunState.RUNNING, RunState.CANCELLED, RunState.FAILED}),
    RunState.RUNNING: frozenset({RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED}),
    RunState.SUCCEEDED: frozenset(),
    RunState.FAILED: frozenset(),
    RunState.CANCELLED: frozenset(),
}

NODE_TRANSITIONS: dict[NodeState, frozenset[NodeState]] = {
    NodeState.PENDING: frozenset({NodeState.QUEUED, NodeState.SKIPPED, NodeState.CANCELLED}),
    NodeState.QUEUED: frozenset({NodeState.RUNNING, NodeState.SKIPPED, NodeState.CANCELLED}),
    NodeState.RUNNING: frozenset(
        {NodeState.SUCCEEDED, NodeState.FAILED, NodeState.RETRYING, NodeState.CANCELLED}
    ),
    NodeState.RETRYING: frozenset({NodeState.RUNNING, NodeState.CANCELLED, NodeState.FAILED}),
    NodeState.SUCCEEDED: frozenset(),
    NodeState.FAILED: frozenset(),
    NodeState.SKIPPED: frozenset(),
    NodeState.CANCELLED: frozenset(),
}


def run_sources(target: RunState) -> frozenset[RunState]:
    """Every run state from which ``target`` may be reached."""
    return frozenset(s for s, tos in RUN_TRANSITIONS.items() if target in tos)


def node_sources(target: NodeState) -> frozenset[NodeState]:
    """Every node state from which ``target`` may be reached."""
    return frozenset(s for s, tos in NODE_TRANSITIONS.items() if target in tos)


def can_move_run(src: RunState, dst: RunState) -> bool:
    return dst in RUN_TRANSITIONS[src]


def can_move_node(src: NodeState, dst: NodeState) -> bool:
    return dst in NODE_TRANSITIONS[src]

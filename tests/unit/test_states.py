"""The run/node state machines (SPEC §2) and their event types (SPEC §4)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import pytest

from ferryman.domain.events import NODE_EVENT, RUN_EVENT, EventType
from ferryman.domain.states import (
    NODE_TERMINAL,
    NODE_TRANSITIONS,
    RUN_TERMINAL,
    RUN_TRANSITIONS,
    NodeState,
    RunState,
    can_move_node,
    can_move_run,
    node_sources,
    run_sources,
)

R = RunState
N = NodeState


# --------------------------------------------------------------------------- table shape


def test_tables_cover_every_state() -> None:
    assert set(RUN_TRANSITIONS) == set(RunState)
    assert set(NODE_TRANSITIONS) == set(NodeState)
    for targets in RUN_TRANSITIONS.values():
        assert targets <= set(RunState)
    for node_targets in NODE_TRANSITIONS.values():
        assert node_targets <= set(NodeState)


def test_terminal_sets_match_spec() -> None:
    assert {R.SUCCEEDED, R.FAILED, R.CANCELLED} == RUN_TERMINAL
    assert {N.SUCCEEDED, N.FAILED, N.SKIPPED, N.CANCELLED} == NODE_TERMINAL


@pytest.mark.parametrize("state", list(RunState))
def test_run_terminal_states_have_no_exits(state: RunState) -> None:
    assert state.terminal == (state in RUN_TERMINAL)
    if state.terminal:
        assert RUN_TRANSITIONS[state] == frozenset()
    else:
        assert RUN_TRANSITIONS[state], f"non-terminal run state {state} has no exit"


@pytest.mark.parametrize("state", list(NodeState))
def test_node_terminal_states_have_no_exits(state: NodeState) -> None:
    assert state.terminal == (state in NODE_TERMINAL)
    if state.terminal:
        assert NODE_TRANSITIONS[state] == frozenset()
    else:
        assert NODE_TRANSITIONS[state], f"non-terminal node state {state} has no exit"


def test_no_self_loops() -> None:
    for run_state, run_targets in RUN_TRANSITIONS.items():
        assert run_state not in run_targets
    for node_state, node_targets in NODE_TRANSITIONS.items():
        assert node_state not in node_targets


def test_nothing_moves_back_to_the_initial_state() -> None:
    assert run_sources(R.QUEUED) == frozenset()
    assert node_sources(N.PENDING) == frozenset()


def test_every_state_is_reachable_from_the_initial_one() -> None:
    def reachable(start: Any, table: Mapping[Any, frozenset[Any]]) -> set[Any]:
        seen = {start}
        todo = [start]
        while todo:
            for nxt in table[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    assert reachable(R.QUEUED, RUN_TRANSITIONS) == set(RunState)
    assert reachable(N.PENDING, NODE_TRANSITIONS) == set(NodeState)


def test_every_non_terminal_state_can_reach_a_terminal_one() -> None:
    for state in NodeState:
        if not state.terminal:
            assert NODE_TRANSITIONS[state] & NODE_TERMINAL or any(
                NODE_TRANSITIONS[s] & NODE_TERMINAL for s in NODE_TRANSITIONS[state]
            )
    for run_state in RunState:
        if not run_state.terminal:
            assert RUN_TRANSITIONS[run_state] & RUN_TERMINAL


# --------------------------------------------------------------------------- inverses


@pytest.mark.parametrize("target", list(RunState))
def test_run_sources_is_the_inverse_of_the_table(target: RunState) -> None:
    expected = {src for src in RunState if target in RUN_TRANSITIONS[src]}
    assert run_sources(target) == expected
    assert isinstance(run_sources(target), frozenset)


@pytest.mark.parametrize("target", list(NodeState))
def test_node_sources_is_the_inverse_of_the_table(target: NodeState) -> None:
    expected = {src for src in NodeState if target in NODE_TRANSITIONS[src]}
    assert node_sources(target) == expected
    assert isinstance(node_sources(target), frozenset)


def test_sources_and_can_move_agree_on_every_pair() -> None:
    for src, dst in itertools.product(RunState, RunState):
        assert can_move_run(src, dst) == (src in run_sources(dst))
        assert can_move_run(src, dst) == (dst in RUN_TRANSITIONS[src])
    for nsrc, ndst in itertools.product(NodeState, NodeState):
        assert can_move_node(nsrc, ndst) == (nsrc in node_sources(ndst))
        assert can_move_node(nsrc, ndst) == (ndst in NODE_TRANSITIONS[nsrc])


def test_terminal_states_are_never_sources() -> None:
    for target in RunState:
        assert not run_sources(target) & RUN_TERMINAL
    for ntarget in NodeState:
        assert not node_sources(ntarget) & NODE_TERMINAL


# --------------------------------------------------------------------------- SPEC §2 moves

LEGAL_RUN = [
    (R.QUEUED, R.RUNNING),
    (R.QUEUED, R.CANCELLED),
    (R.RUNNING, R.SUCCEEDED),
    (R.RUNNING, R.FAILED),
    (R.RUNNING, R.CANCELLED),
]

ILLEGAL_RUN = [
    (R.QUEUED, R.SUCCEEDED),  # must run first
    (R.RUNNING, R.QUEUED),
    (R.SUCCEEDED, R.RUNNING),
    (R.SUCCEEDED, R.FAILED),
    (R.FAILED, R.RUNNING),
    (R.FAILED, R.SUCCEEDED),
    (R.CANCELLED, R.RUNNING),
    (R.CANCELLED, R.QUEUED),
]

LEGAL_NODE = [
    (N.PENDING, N.QUEUED),
    (N.QUEUED, N.RUNNING),
    (N.RUNNING, N.SUCCEEDED),
    (N.RUNNING, N.FAILED),
    (N.RUNNING, N.RETRYING),
    (N.RETRYING, N.RUNNING),
    (N.RUNNING, N.CANCELLED),
    (N.PENDING, N.SKIPPED),
    (N.PENDING, N.CANCELLED),
    (N.QUEUED, N.CANCELLED),
    (N.RETRYING, N.CANCELLED),
]

ILLEGAL_NODE = [
    (N.PENDING, N.RUNNING),  # must be queued first
    (N.PENDING, N.SUCCEEDED),
    (N.QUEUED, N.SUCCEEDED),
    (N.QUEUED, N.PENDING),
    (N.RUNNING, N.PENDING),
    (N.RUNNING, N.QUEUED),
    (N.RETRYING, N.SUCCEEDED),  # a retry goes through running again
    (N.RETRYING, N.RETRYING),
]


@pytest.mark.parametrize(("src", "dst"), LEGAL_RUN)
def test_legal_run_moves(src: RunState, dst: RunState) -> None:
    assert can_move_run(src, dst)


@pytest.mark.parametrize(("src", "dst"), ILLEGAL_RUN)
def test_illegal_run_moves(src: RunState, dst: RunState) -> None:
    assert not can_move_run(src, dst)


@pytest.mark.parametrize(("src", "dst"), LEGAL_NODE)
def test_legal_node_moves(src: NodeState, dst: NodeState) -> None:
    assert can_move_node(src, dst)


@pytest.mark.parametrize(("src", "dst"), ILLEGAL_NODE)
def test_illegal_node_moves(src: NodeState, dst: NodeState) -> None:
    assert not can_move_node(src, dst)


@pytest.mark.parametrize("src", sorted(NODE_TERMINAL))
def test_terminal_node_can_move_nowhere(src: NodeState) -> None:
    for dst in NodeState:
        assert not can_move_node(src, dst), f"{src} -> {dst} must be illegal"


@pytest.mark.parametrize("src", sorted(RUN_TERMINAL))
def test_terminal_run_can_move_nowhere(src: RunState) -> None:
    for dst in RunState:
        assert not can_move_run(src, dst), f"{src} -> {dst} must be illegal"


def test_happy_paths_are_walkable() -> None:
    run_path = [R.QUEUED, R.RUNNING, R.SUCCEEDED]
    assert all(can_move_run(a, b) for a, b in itertools.pairwise(run_path))
    node_path = [N.PENDING, N.QUEUED, N.RUNNING, N.RETRYING, N.RUNNING, N.RETRYING, N.RUNNING]
    assert all(can_move_node(a, b) for a, b in itertools.pairwise(node_path))
    for end in (N.SUCCEEDED, N.FAILED, N.CANCELLED):
        assert can_move_node(N.RUNNING, end)


def test_state_values_are_the_spec_strings() -> None:
    assert [s.value for s in RunState] == ["queued", "running", "succeeded", "failed", "cancelled"]
    assert {s.value for s in NodeState} == {
        "pending",
        "queued",
        "running",
        "retrying",
        "succeeded",
        "failed",
        "skipped",
        "cancelled",
    }
    assert RunState("running") is R.RUNNING
    assert N.RUNNING == "running"


# --------------------------------------------------------------------------- events


def test_every_run_state_has_an_event_type() -> None:
    assert set(RUN_EVENT) == set(RunState)
    assert len(set(RUN_EVENT.values())) == len(RUN_EVENT)


def test_every_node_state_but_pending_has_an_event_type() -> None:
    assert set(NODE_EVENT) == set(NodeState) - {N.PENDING}
    assert len(set(NODE_EVENT.values())) == len(NODE_EVENT)


def test_every_reachable_target_has_an_event() -> None:
    """Every transition writes an event, so every target of a move needs a type."""
    for targets in NODE_TRANSITIONS.values():
        for dst in targets:
            assert dst in NODE_EVENT
    for run_targets in RUN_TRANSITIONS.values():
        for rdst in run_targets:
            assert rdst in RUN_EVENT


def test_event_names_follow_the_state_names() -> None:
    for state, event in RUN_EVENT.items():
        assert event.value == "Run" + state.value.capitalize()
    for nstate, nevent in NODE_EVENT.items():
        assert nevent.value == "Node" + nstate.value.capitalize()
    schedule_events = {"ScheduleTickMissed", "ScheduleTickSkipped", "ScheduleTickFailed"}
    assert {e.value for e in EventType} == {e.value for e in RUN_EVENT.values()} | {
        e.value for e in NODE_EVENT.values()
    } | schedule_events | {"NodeWaiting"}


def test_event_types_include_the_spec_list() -> None:
    spec_list = {
        "RunQueued",
        "RunRunning",
        "RunSucceeded",
        "RunFailed",
        "RunCancelled",
        "NodeRunning",
        "NodeSucceeded",
        "NodeFailed",
        "NodeRetrying",
    }
    assert spec_list <= {e.value for e in EventType}
    for name in spec_list:
        assert EventType(name).value == name

"""Starting runs and the gate's hooks, on SQLite and PostgreSQL.

``RunService.start`` / ``start_version`` (the one use case every interface
calls), ``creation.create_run`` inside a caller's transaction, the
``GateHooks`` a run's end and every flush call, and ``Tx.savepoint``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from ferryman.domain.options import Origin, RunOptions
from ferryman.domain.params import ParamsInvalid
from ferryman.domain.states import NodeState, RunState
from ferryman.dsl.loader import load_pipeline
from ferryman.errors import Conflict, NotFound
from ferryman.services.catalog import PipelineVersion, register
from ferryman.services.creation import RunRequest, create_run
from ferryman.services.gate import GateHooks, Tx
from ferryman.services.queries import get_events, get_run
from ferryman.services.runs import RunService
from ferryman.store.engine import Store
from ferryman.store.tables import events, nodes, runs

PIPES = Path(__file__).parent.parent / "pipelines" / "basic.py"


def deploy(store: Store, name: str = "fan", namespace: str = "default") -> PipelineVersion:
    with store.write() as conn:
        return register(conn, namespace, load_pipeline(f"{PIPES}:{name}"))


def count(store: Store, table: sa.Table) -> int:
    with store.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


class Spy:
    """Records every hook call."""

    def __init__(self) -> None:
        self.ended: list[tuple[str, RunState, str]] = []
        self.flushed: list[list[str]] = []

    def on_run_ended(self, tx: Tx, run_id: str, state: RunState, event: Mapping[str, Any]) -> None:
        self.ended.append((run_id, state, event["type"]))

    def on_events(self, tx: Tx, written: Sequence[Mapping[str, Any]]) -> None:
        self.flushed.append([f"{e['type']}:{e['node'] or ''}" for e in written])

    def hooks(self) -> GateHooks:
        return GateHooks(on_run_ended=(self.on_run_ended,), on_events=(self.on_events,))


# -- start ---------------------------------------------------------------------------


def test_start_validates_and_creates_the_newest_version(store: Store) -> None:
    deploy(store)
    started = RunService(store).start(
        "default",
        "fan",
        {"n": "4"},
        options=RunOptions(timeout=60, webhook_url="https://example.com/h"),
        origin=Origin(kind="api", user="alice"),
        labels={"team": "ml"},
    )
    assert started.created
    with store.read() as conn:
        run = get_run(conn, started.id)
    assert run["params"] == {"n": 4, "shards": 3}  # validated, defaults filled in
    assert run["trigger"] == {"kind": "api", "user": "alice"}
    assert run["options"] == {"timeout": 60.0, "webhook_url": "https://example.com/h"}
    assert run["labels"] == {"team": "ml"}
    assert {k: started.record[k] for k in ("id", "state", "params", "trigger")} == {
        k: run[k] for k in ("id", "state", "params", "trigger")
    }


def test_start_reports_every_parameter_error_and_unknown_pipelines(store: Store) -> None:
    deploy(store)
    svc = RunService(store)
    with pytest.raises(ParamsInvalid) as err:
        svc.start("default", "fan", {"n": "many", "shards": "x", "zzz": 1})
    assert {e.path for e in err.value.errors} == {"n", "shards", "zzz"}
    with pytest.raises(NotFound):
        svc.start("default", "nope", {})
    assert count(store, runs) == 0


def test_start_with_a_conflicting_idempotency_key(store: Store) -> None:
    deploy(store)
    deploy(store, "failing")
    svc = RunService(store)
    first = svc.start("default", "fan", {"n": 3}, idempotency_key="k")
    again = svc.start("default", "fan", {"n": "3"}, idempotency_key="k")  # same once validated
    assert (again.id, again.created) == (first.id, False)
    for pipeline, params in (("fan", {"n": 4}), ("failing", {})):
        with pytest.raises(Conflict) as err:
            svc.start("default", pipeline, params, idempotency_key="k")
        assert err.value.details == {"run_id": first.id}
        assert "already used" in err.value.message
    other_ns = deploy(store, namespace="other")  # the key is per namespace
    assert svc.start_version(other_ns, {"n": 3}, idempotency_key="k").created
    assert count(store, runs) == 2


def test_rerun_goes_through_the_same_creation(store: Store) -> None:
    pv = deploy(store)
    svc = RunService(store)
    first = svc.start_version(pv, {"n": 2}, options=RunOptions(infrastructure="inline"))
    svc.cancel(first.id)
    new = svc.rerun(first.id)
    with store.read() as conn:
        run = get_run(conn, new)
    assert run["rerun_of"] == first.id
    assert run["options"] == {"infrastructure": "inline"}
    assert run["params"] == {"n": 2, "shards": 3}
    assert run["trigger"] is None


# -- create_run inside a transaction ----------------------------------------------------


def test_create_run_inside_a_callers_transaction(store: Store) -> None:
    pv = deploy(store)
    svc = RunService(store)
    origin = Origin(kind="schedule")
    with store.write() as conn:
        tx = svc.tx(conn)
        a = create_run(tx, RunRequest(pv, {"n": 1, "shards": 3}, origin=origin))
        b = create_run(tx, RunRequest(pv, {"n": 2, "shards": 3}, labels={"x": "1"}))
        tx.flush()
    assert a["id"] != b["id"]
    with store.read() as conn:
        run_a, run_b = get_run(conn, a["id"]), get_run(conn, b["id"])
        evs = get_events(conn, a["id"])
    assert run_a["state"] == run_b["state"] == "queued"
    assert run_a["trigger"] == {"kind": "schedule"}
    assert run_b["labels"] == {"x": "1"}
    assert evs[0]["type"] == "RunQueued" and evs[0]["data"] == {"trigger": {"kind": "schedule"}}
    assert [e["node"] for e in evs[1:]] == ["numbers"]  # the only node without upstream
    assert {n["name"]: n["state"] for n in run_a["nodes"]}["numbers"] == "queued"


def test_create_run_rolls_back_with_its_transaction(store: Store) -> None:
    pv = deploy(store)
    svc = RunService(store)
    with pytest.raises(RuntimeError), store.write() as conn:
        tx = svc.tx(conn)
        create_run(tx, RunRequest(pv, {"n": 1, "shards": 3}))
        tx.flush()
        raise RuntimeError("the caller fails after creating")
    assert (count(store, runs), count(store, nodes), count(store, events)) == (0, 0, 0)


# -- hooks -----------------------------------------------------------------------------


def test_run_ended_hooks_run_once_per_run_end(store: Store) -> None:
    pv = deploy(store)
    spy = Spy()
    svc = RunService(store, hooks=spy.hooks())
    run_id = svc.start_version(pv, {"n": 1}).id
    assert spy.ended == []
    svc.cancel(run_id)  # nothing had started: the run ends at once
    assert spy.ended == [(run_id, RunState.CANCELLED, "RunCancelled")]
    with pytest.raises(Conflict):
        svc.cancel(run_id)
    with store.write() as conn:  # the finishing path again: the guarded move loses
        tx = svc.tx(conn)
        row = conn.execute(
            sa.select(
                runs.c.failed_node, runs.c.cancel_requested, runs.c.cancel_reason, runs.c.error
            ).where(runs.c.id == run_id)
        ).one()
        assert tx.finish_run(run_id, row) is False
        tx.flush()
    assert len(spy.ended) == 1


def test_hooks_see_a_failure_ended_by_node_outcomes(store: Store) -> None:
    pv = deploy(store)
    spy = Spy()
    svc = RunService(store, hooks=spy.hooks())
    keep = svc.start_version(pv, {"n": 1}).id  # another run: its end is not reported
    run_id = svc.start_version(pv, {"n": 1}).id
    with store.write() as conn:
        tx = svc.tx(conn)
        (root,) = tx.move_nodes(
            NodeState.RUNNING,
            where=sa.and_(nodes.c.run_id == run_id, nodes.c.name == "numbers"),
            values={"attempt": 1, "worker_id": "w"},
        )
        tx.node_failed(root.id, run_id, "numbers", 1, "boom", retry_policy_delay=None, worker="w")
        tx.flush()
    assert spy.ended == [(run_id, RunState.FAILED, "RunFailed")]
    with store.read() as conn:
        assert get_run(conn, keep, with_nodes=False)["state"] == "queued"


def test_events_hooks_see_each_flush_once_in_order(store: Store) -> None:
    pv = deploy(store)
    spy = Spy()
    svc = RunService(store, hooks=spy.hooks())
    run_id = svc.start_version(pv, {"n": 1}).id
    svc.cancel(run_id)
    queued, cancelled = spy.flushed
    assert queued == ["RunQueued:", "NodeQueued:numbers"]
    assert cancelled[-1] == "RunCancelled:"  # after every node's event
    assert sorted(cancelled[:-1]) == sorted(
        f"NodeCancelled:{n}"
        for n in ("numbers", "square_sum", "square_sum-2", "square_sum-3", "total")
    )
    with store.write() as conn:  # a flush with nothing to write calls no hook
        svc.tx(conn).flush()
    assert len(spy.flushed) == 2


def test_a_failing_hook_rolls_back_the_finishing_transaction(store: Store) -> None:
    pv = deploy(store)

    def broken(tx: Tx, run_id: str, state: RunState, event: Mapping[str, Any]) -> None:
        raise RuntimeError("hook failed")

    svc = RunService(store, hooks=GateHooks(on_run_ended=(broken,)))
    run_id = svc.start_version(pv, {"n": 1}).id
    with pytest.raises(RuntimeError, match="hook failed"):
        svc.cancel(run_id)
    with store.read() as conn:
        run = get_run(conn, run_id)
    assert run["state"] == "queued" and not run["cancel_requested"]


# -- savepoints and event order --------------------------------------------------------


def test_savepoint_discards_the_events_of_a_failed_block(store: Store) -> None:
    pv = deploy(store)
    svc = RunService(store)
    kept = svc.start_version(pv, {"n": 1}).id
    with store.write() as conn:
        tx = svc.tx(conn)
        tx.move_run(kept, RunState.RUNNING)
        with pytest.raises(RuntimeError), tx.savepoint():
            create_run(tx, RunRequest(pv, {"n": 1, "shards": 3}))
            raise RuntimeError("the block fails")
        with tx.savepoint():
            made = create_run(tx, RunRequest(pv, {"n": 2, "shards": 3}))
        tx.flush()
    assert count(store, runs) == 2  # the failed block's run is gone, the other stays
    with store.read() as conn:
        run_ids = set(conn.execute(sa.select(events.c.run_id)).scalars())
        kept_events = [e["type"] for e in get_events(conn, kept)]
    assert run_ids == {kept, made["id"]}  # no event of the discarded run
    assert kept_events == ["RunQueued", "NodeQueued", "RunRunning"]


def test_events_before_puts_events_ahead_of_a_mark(store: Store) -> None:
    pv = deploy(store)
    svc = RunService(store)
    run_id = svc.start_version(pv, {"n": 1}).id
    with store.write() as conn:
        tx = svc.tx(conn)
        mark = tx.event_mark()
        tx.move_nodes(
            NodeState.RUNNING,
            where=sa.and_(nodes.c.run_id == run_id, nodes.c.name == "numbers"),
            values={"attempt": 1, "worker_id": "w"},
        )
        with tx.events_before(mark):
            tx.move_run(run_id, RunState.RUNNING)
        tx.flush()
    with store.read() as conn:
        types = [e["type"] for e in get_events(conn, run_id)]
    assert types == ["RunQueued", "NodeQueued", "RunRunning", "NodeRunning"]

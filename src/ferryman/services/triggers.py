"""Event triggers: start a pipeline's run when another pipeline's run ends.

Registering a pipeline makes its latest version's triggers active
(``services/catalog.py``). ``TriggerHook`` is a gate hook
(``GateHooks.on_run_ended``): when a run reaches a final state it fires the
triggers on that state in the *same transaction* as the state change (see
docs/decisions/0004-triggers-fire-in-the-finishing-transaction.md). The state
change is a guarded update that can succeed only once per run, so a trigger
fires exactly once per triggering event, whatever crashes or retries happen
around it; the unique ``trigger_firings`` row per (triggering run, trigger)
holds that line too.

Firing never breaks the finishing transaction: every trigger runs inside a
savepoint, and whatever goes wrong (a mapping that cannot be evaluated,
parameters the triggered pipeline rejects, a missing pipeline, the chain
depth limit) is recorded in ``trigger_firings.error`` and logged instead.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ferryman.domain.options import Origin
from ferryman.domain.params import ParamsInvalid, validate_params
from ferryman.domain.spec import PipelineSpec, TriggerMappingError, TriggerSpec, resolve_trigger
from ferryman.domain.states import RunState
from ferryman.errors import FerrymanError
from ferryman.services.catalog import latest
from ferryman.services.creation import RunRequest, create_run
from ferryman.services.gate import Tx
from ferryman.store.prepared import Prepared
from ferryman.store.tables import new_id, nodes, pipeline_triggers, runs, trigger_firings

log = logging.getLogger(__name__)

DEFAULT_MAX_DEPTH = 10

# The only statement a run without triggers pays for when it ends: an index probe.
_ANY = Prepared(
    sa.select(pipeline_triggers.c.id)
    .where(
        pipeline_triggers.c.source_namespace == sa.bindparam("ns"),
        pipeline_triggers.c.source_pipeline == sa.bindparam("name"),
        pipeline_triggers.c.state == sa.bindparam("state"),
    )
    .limit(1),
    returns=("id",),
)


class TriggerHook:
    """The gate hook that fires event triggers when a run ends.

    ``max_depth`` (``FERRYMAN_TRIGGER_MAX_DEPTH``) bounds chains of triggered
    runs, so a loop (A triggers B triggers A) stops.
    """

    def __init__(self, max_depth: int = DEFAULT_MAX_DEPTH) -> None:
        self.max_depth = max_depth

    def __call__(self, tx: Tx, run_id: str, state: RunState, event: Mapping[str, Any]) -> None:
        info = tx.cache.get(tx.conn, run_id)
        if has_triggers(tx.conn, info.namespace, info.pipeline, state.value):
            fire(tx, run_id, state.value, event["id"], self.max_depth)


@dataclass(frozen=True)
class _Target:
    namespace: str
    pipeline: str
    position: int
    trigger: TriggerSpec


def has_triggers(conn: Connection, namespace: str, pipeline: str, state: str) -> bool:
    """Whether any pipeline is triggered by ``pipeline`` reaching ``state`` (an index probe)."""
    return bool(_ANY.rows(conn, {"ns": namespace, "name": pipeline, "state": state}))


def fire(tx: Tx, run_id: str, state: str, event_id: str, max_depth: int) -> None:
    """Start the runs triggered by ``run_id`` reaching ``state`` (inside ``tx``)."""
    info = tx.cache.get(tx.conn, run_id)
    targets = [
        _Target(
            r.target_namespace, r.target_pipeline, r.position, TriggerSpec.model_validate(r.spec)
        )
        for r in tx.conn.execute(
            sa.select(
                pipeline_triggers.c.target_namespace,
                pipeline_triggers.c.target_pipeline,
                pipeline_triggers.c.position,
                pipeline_triggers.c.spec,
            )
            .where(
                pipeline_triggers.c.source_namespace == info.namespace,
                pipeline_triggers.c.source_pipeline == info.pipeline,
                pipeline_triggers.c.state == state,
            )
            .order_by(pipeline_triggers.c.id)
        )
    ]
    if not targets:
        return
    row = tx.conn.execute(sa.select(runs.c.trigger).where(runs.c.id == run_id)).first()
    source = Origin.from_stored(row.trigger if row else None)
    depth = ((source.depth if source else None) or 0) + 1
    wanted = set().union(*(t.trigger.referenced()[1] for t in targets))
    outputs: dict[str, Any] = {}
    if wanted:
        outputs = {
            r.name: r.output
            for r in tx.conn.execute(
                sa.select(nodes.c.name, nodes.c.output).where(
                    nodes.c.run_id == run_id,
                    nodes.c.name.in_(sorted(wanted)),
                    nodes.c.has_output.is_(True),
                )
            )
        }
    run_fields = {
        "id": run_id,
        "pipeline": info.pipeline,
        "namespace": info.namespace,
        "version": info.version,
        "state": state,
    }
    for target in targets:
        origin = Origin(
            kind="event",
            run_id=run_id,
            namespace=info.namespace,
            pipeline=info.pipeline,
            state=state,
            event_id=event_id,
            depth=depth,
            trigger=target.position,
        )
        _fire_one(tx, target, info.params, outputs, run_fields, origin, info.labels, max_depth)


def _fire_one(
    tx: Tx,
    target: _Target,
    params: dict[str, Any],
    outputs: dict[str, Any],
    run_fields: dict[str, Any],
    origin: Origin,
    labels: dict[str, str],
    max_depth: int,
) -> None:
    assert origin.run_id is not None and origin.depth is not None
    firing = {
        "id": new_id(),
        "source_run_id": origin.run_id,
        "event_id": origin.event_id,
        "state": origin.state,
        "target_namespace": target.namespace,
        "target_pipeline": target.pipeline,
        "position": target.position,
        "created_at": tx.now,
    }
    name = f"{target.namespace}/{target.pipeline}"
    error: str | None = None
    try:
        with tx.savepoint():
            # First the unique (triggering run, trigger) row: if it exists, this
            # trigger already fired and nothing else is done.
            tx.conn.execute(sa.insert(trigger_firings).values(**firing))
            if origin.depth > max_depth:
                raise _Skip(
                    f"trigger chain depth limit reached: the new run would be trigger level "
                    f"{origin.depth}, more than FERRYMAN_TRIGGER_MAX_DEPTH={max_depth}"
                )
            mapped = {
                k: resolve_trigger(v, params, outputs, run_fields)
                for k, v in target.trigger.params.items()
            }
            pv = latest(tx.conn, target.namespace, target.pipeline)
            run_labels = {
                **(labels if target.trigger.inherit_labels else {}),
                **target.trigger.labels,
            }
            request = RunRequest(
                pv, validate_params(pv.spec, mapped), origin=origin, labels=run_labels
            )
            new_run = create_run(tx, request)["id"]
            tx.conn.execute(
                sa.update(trigger_firings)
                .where(trigger_firings.c.id == firing["id"])
                .values(run_id=new_run)
            )
        return
    except sa.exc.IntegrityError:
        log.info("trigger %s for run %s already fired", name, origin.run_id)
        return
    except (_Skip, TriggerMappingError, ParamsInvalid, FerrymanError) as exc:
        error = _reason(exc)
    except Exception as exc:  # never let a trigger break the finishing transaction
        log.exception("trigger %s for run %s failed", name, origin.run_id)
        error = f"internal error: {type(exc).__name__}"
    log.warning(
        "trigger of %s on run %s (%s) started no run: %s",
        name, origin.run_id, origin.state, error,
    )  # fmt: skip
    try:
        with tx.savepoint():
            tx.conn.execute(sa.insert(trigger_firings).values(**firing, error=error[:4000]))
    except sa.exc.SQLAlchemyError:
        log.exception("could not record why trigger %s started no run", name)


class _Skip(Exception):
    """A trigger deliberately starts no run (the reason is recorded)."""


def _reason(exc: Exception) -> str:
    if isinstance(exc, ParamsInvalid):
        return "the mapped parameters are invalid: " + "; ".join(str(e) for e in exc.errors)
    if isinstance(exc, FerrymanError):
        return exc.message
    return str(exc)


def firings_of(conn: Connection, run_id: str) -> list[dict[str, Any]]:
    """What the triggers did when ``run_id`` ended: started runs and skip reasons."""
    return [
        {
            "pipeline": r.target_pipeline,
            "namespace": r.target_namespace,
            "state": r.state,
            "event_id": r.event_id,
            "run_id": r.run_id,
            "error": r.error,
            "time": r.created_at,
        }
        for r in conn.execute(
            sa.select(trigger_firings)
            .where(trigger_firings.c.source_run_id == run_id)
            .order_by(
                trigger_firings.c.target_namespace,
                trigger_firings.c.target_pipeline,
                trigger_firings.c.position,
            )
        )
    ]


def triggers_of(namespace: str, spec: PipelineSpec) -> list[dict[str, Any]]:
    """``spec``'s triggers for display, with their resolved source namespace."""
    out = []
    for t in spec.triggers:
        ns, name = t.source(namespace)
        out.append({**t.model_dump(mode="json"), "namespace": ns, "pipeline": name})
    return out

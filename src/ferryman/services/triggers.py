"""Event triggers: start a pipeline's run when another pipeline's run ends.

Registering a pipeline writes one ``pipeline_triggers`` row per (trigger,
state) of its *latest* version, replacing the previous ones. When a run
reaches a final state, ``Tx._finish_run`` calls ``fire`` in the *same
transaction* as that state change (see docs/decisions/0004-triggers-fire-in-
the-finishing-transaction.md). The state change is a guarded update that can
succeed only once per run, so a trigger fires exactly once per triggering
event, whatever crashes or retries happen around it; the unique
``trigger_firings`` row per (triggering run, trigger) holds that line too.

Firing never breaks the finishing transaction: every trigger runs inside a
savepoint, and whatever goes wrong (a mapping that cannot be evaluated,
parameters the triggered pipeline rejects, a missing pipeline, the chain
depth limit) is recorded in ``trigger_firings.error`` and logged instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ferryman.domain.params import ParamsInvalid, validate_params
from ferryman.domain.spec import PipelineSpec, TriggerMappingError, TriggerSpec, resolve_trigger
from ferryman.errors import FerrymanError, InvalidInput
from ferryman.store.prepared import Prepared
from ferryman.store.tables import (
    new_id,
    nodes,
    pipeline_triggers,
    pipeline_versions,
    pipelines,
    runs,
    trigger_firings,
)

if TYPE_CHECKING:
    from ferryman.services.runs import Tx

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


# --------------------------------------------------------------------------- registration


def _latest_spec(conn: Connection, namespace: str, name: str) -> PipelineSpec | None:
    from ferryman.services.pipelines import spec_of_version

    vid = conn.execute(
        sa.select(sa.func.max(pipeline_versions.c.id))
        .join(pipelines, pipelines.c.id == pipeline_versions.c.pipeline_id)
        .where(pipelines.c.namespace == namespace, pipelines.c.name == name)
    ).scalar()
    return None if vid is None else spec_of_version(conn, vid)


def check_sources(conn: Connection, namespace: str, spec: PipelineSpec) -> list[str]:
    """Check ``spec``'s triggers against the registered triggering pipelines.

    Raises ``InvalidInput`` listing every trigger that reads a parameter or
    step its (registered) source does not have. Returns warnings for sources
    that are not registered yet: those are checked when the trigger fires.
    """
    problems: list[str] = []
    details: list[dict[str, str]] = []
    warnings: list[str] = []
    for i, t in enumerate(spec.triggers):
        ns, name = t.source(namespace)
        where = f"trigger {i} of {spec.name!r} (on {ns}/{name})"
        src = _latest_spec(conn, ns, name)
        if src is None:
            warnings.append(
                f"{where}: pipeline {name!r} is not registered in namespace {ns!r} yet; "
                "the mapping is checked when the trigger fires"
            )
            continue
        params, steps = t.referenced()
        known_p = {p.name for p in src.params}
        known_s = {s.name for s in src.steps}
        reasons = [
            f"{name!r} has no parameter {p!r} (params: {', '.join(sorted(known_p)) or 'none'})"
            for p in sorted(params - known_p)
        ] + [
            f"{name!r} has no step {s!r} (steps: {', '.join(sorted(known_s))})"
            for s in sorted(steps - known_s)
        ]
        problems.extend(f"{where}: {r}" for r in reasons)
        details.extend({"path": f"triggers[{i}].params", "reason": r} for r in reasons)
    if problems:
        raise InvalidInput(
            f"invalid trigger(s) in pipeline {spec.name!r}: " + "; ".join(problems), details
        )
    return warnings


def sync(conn: Connection, namespace: str, spec: PipelineSpec) -> None:
    """Make ``spec``'s triggers the active ones of ``(namespace, spec.name)``."""
    conn.execute(
        sa.delete(pipeline_triggers).where(
            pipeline_triggers.c.target_namespace == namespace,
            pipeline_triggers.c.target_pipeline == spec.name,
        )
    )
    rows = []
    from ferryman.store.tables import utcnow

    now = utcnow()
    for i, t in enumerate(spec.triggers):
        ns, name = t.source(namespace)
        for state in t.states:
            rows.append(
                {
                    "target_namespace": namespace,
                    "target_pipeline": spec.name,
                    "position": i,
                    "source_namespace": ns,
                    "source_pipeline": name,
                    "state": state,
                    "spec": t.model_dump(mode="json"),
                    "created_at": now,
                }
            )
    if rows:
        conn.execute(sa.insert(pipeline_triggers), rows)


# --------------------------------------------------------------------------- firing


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
    depth = int(((row.trigger if row else None) or {}).get("depth", 0)) + 1
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
    origin = {
        "kind": "event",
        "run_id": run_id,
        "namespace": info.namespace,
        "pipeline": info.pipeline,
        "state": state,
        "event_id": event_id,
        "depth": depth,
    }
    for target in targets:
        _fire_one(tx, target, info.params, outputs, run_fields, origin, info.labels, max_depth)


def _fire_one(
    tx: Tx,
    target: _Target,
    params: dict[str, Any],
    outputs: dict[str, Any],
    run_fields: dict[str, Any],
    origin: dict[str, Any],
    labels: dict[str, str],
    max_depth: int,
) -> None:
    from ferryman.services.pipelines import latest
    from ferryman.services.runs import RunService

    firing = {
        "id": new_id(),
        "source_run_id": origin["run_id"],
        "event_id": origin["event_id"],
        "state": origin["state"],
        "target_namespace": target.namespace,
        "target_pipeline": target.pipeline,
        "position": target.position,
        "created_at": tx.now,
    }
    name = f"{target.namespace}/{target.pipeline}"
    error: str | None = None
    n_events = len(tx._events)
    savepoint = tx.conn.begin_nested()
    try:
        # First the unique (triggering run, trigger) row: if it exists, this
        # trigger already fired and nothing else is done.
        tx.conn.execute(sa.insert(trigger_firings).values(**firing))
        if origin["depth"] > max_depth:
            raise _Skip(
                f"trigger chain depth limit reached: the new run would be trigger level "
                f"{origin['depth']}, more than FERRYMAN_TRIGGER_MAX_DEPTH={max_depth}"
            )
        mapped = {
            k: resolve_trigger(v, params, outputs, run_fields)
            for k, v in target.trigger.params.items()
        }
        pv = latest(tx.conn, target.namespace, target.pipeline)
        valid = validate_params(pv.spec, mapped)
        run_labels = {**(labels if target.trigger.inherit_labels else {}), **target.trigger.labels}
        if tx.store is None:
            raise _Skip("no store to create the run in")
        new_run = RunService(tx.store, tx.cache)._insert_run(
            tx, pv, valid, run_labels, None, {}, None, {}, {**origin, "trigger": target.position}
        )
        tx.conn.execute(
            sa.update(trigger_firings)
            .where(trigger_firings.c.id == firing["id"])
            .values(run_id=new_run)
        )
        savepoint.commit()
        return
    except sa.exc.IntegrityError:
        savepoint.rollback()
        del tx._events[n_events:]
        log.info("trigger %s for run %s already fired", name, origin["run_id"])
        return
    except (_Skip, TriggerMappingError, ParamsInvalid, FerrymanError) as exc:
        error = _reason(exc)
    except Exception as exc:  # never let a trigger break the finishing transaction
        log.exception("trigger %s for run %s failed", name, origin["run_id"])
        error = f"internal error: {type(exc).__name__}"
    savepoint.rollback()
    del tx._events[n_events:]
    log.warning(
        "trigger of %s on run %s (%s) started no run: %s",
        name, origin["run_id"], origin["state"], error,
    )  # fmt: skip
    inner = tx.conn.begin_nested()
    try:
        tx.conn.execute(sa.insert(trigger_firings).values(**firing, error=error[:4000]))
        inner.commit()
    except sa.exc.SQLAlchemyError:
        inner.rollback()
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

"""Watching one attempt's Job to its end, in two phases.

1. ``wait_for_pod``: the Job's pod leaves ``Pending``, at most
   ``pod_watch_timeout_seconds``; past that the Job is deleted and the step
   fails with the pod's reason (``ImagePullBackOff: …``, ``Unschedulable: …``).
2. ``watch_job``: the Job until it completes or fails, with **no** deadline of
   its own: a watch request that ends is renewed from the last
   resourceVersion, a ``410 Gone`` re-lists and carries on, and transient API
   errors are retried with backoff. The exit code comes from the container's
   ``terminated`` state. A Job or pod deleted by somebody else fails the step
   with that reason.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import urllib3

from ferryman.infra.base import EXIT_KILLED, EXIT_LOST, LogSink, Result
from ferryman.infra.kubernetes.api import Cluster, api_error, pod_of, status_of
from ferryman.infra.kubernetes.manifest import DEFAULT_CONTAINER

log = logging.getLogger(__name__)

_STARTING = ("ContainerCreating", "PodInitializing")
_CLOSED = "the kubernetes infrastructure was closed while watching (the job may still run)"


def conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The conditions of a Job or pod that are true, by type."""
    conds = (obj.get("status") or {}).get("conditions") or []
    return {c.get("type"): c for c in conds if c.get("status") == "True"}


def pod_waiting_reason(pod: dict[str, Any]) -> str | None:
    """Why a pending pod does not start, e.g. ``ImagePullBackOff: …``."""
    status = pod.get("status") or {}
    for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") and waiting["reason"] not in _STARTING:
            msg = waiting.get("message")
            return f"{waiting['reason']}: {msg}" if msg else str(waiting["reason"])
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            reason = cond.get("reason") or "Unschedulable"
            msg = cond.get("message")
            return f"{reason}: {msg}" if msg else str(reason)
    return None


def started(pod: dict[str, Any]) -> bool:
    """Whether the pod has left ``Pending``."""
    return (pod.get("status") or {}).get("phase") not in (None, "", "Pending")


def container_name(job: dict[str, Any]) -> str:
    """Name of the step's container (the first one) in a Job object."""
    spec = ((job.get("spec") or {}).get("template") or {}).get("spec") or {}
    containers = spec.get("containers") or [{}]
    return str(containers[0].get("name") or DEFAULT_CONTAINER)


def newest_pod(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The most recently created of ``pods`` (None when there is none)."""
    if not pods:
        return None
    return max(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "")


@dataclass
class JobHandle:
    """What this process knows about one attempt's Job."""

    namespace: str
    name: str
    container: str
    sink: LogSink | None
    mask: Callable[[str], str] = lambda s: s
    pod: str | None = None
    kill_reason: str | None = None
    kill_at: float | None = None
    grace: float = 0.0
    stop_logs: threading.Event = field(default_factory=threading.Event)
    log_thread: threading.Thread | None = None
    log_lock: threading.Lock = field(default_factory=threading.Lock)
    # log resume point: the last timestamp delivered and how many lines carried it
    last_ts: str | None = None
    at_last_ts: int = 0

    @property
    def identifier(self) -> str:
        """``namespace/name``, as the worker stores it."""
        return f"{self.namespace}/{self.name}"


# -- phase 1: the pod leaves Pending ------------------------------------------


def wait_for_pod(cluster: Cluster, h: JobHandle) -> Result | None:
    """Wait until the Job's pod runs (or ended); a Result when the attempt is over.

    At most ``pod_watch_timeout_seconds``: past that the Job is deleted and the
    Result says why the pod did not start."""
    timeout = cluster.config.pod_watch_timeout_seconds
    deadline = time.monotonic() + timeout
    pods: dict[str, dict[str, Any]] = {}
    rv: str | None = None
    relist = True
    failures = 0
    reason: str | None = None
    while True:
        if h.kill_reason is not None:
            return Result(EXIT_KILLED, h.identifier, reason=h.kill_reason)
        if cluster.closed.is_set():
            return Result(EXIT_LOST, h.identifier, reason=_CLOSED)
        try:
            if relist:
                job = cluster.read_job(h.namespace, h.name)
                if job is None:
                    return _gone(h, "before its pod started")
                if conditions(job).keys() & {"Complete", "Failed"}:
                    found, _ = cluster.pods(h.namespace, h.name)
                    newest = newest_pod(found)
                    h.pod = newest["metadata"]["name"] if newest else None
                    return None  # phase 2 reports how it ended
                found, rv = cluster.pods(h.namespace, h.name)
                pods = {p["metadata"]["name"]: p for p in found}
                relist = False
            newest = newest_pod(list(pods.values()))
            if newest is not None:
                if started(newest):
                    h.pod = newest["metadata"]["name"]
                    return None
                reason = pod_waiting_reason(newest) or reason
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return _not_started(cluster, h, timeout, reason, newest)
            for ev in cluster.events(
                cluster.core().list_namespaced_pod,
                h.namespace,
                rv,
                remaining + 0.5,
                label_selector=f"job-name={h.name}",
            ):
                obj = ev.get("object") or {}
                rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                if ev.get("type") == "BOOKMARK" or not pod_of(obj, h.name):
                    continue
                pname = obj["metadata"]["name"]
                if ev.get("type") == "DELETED":
                    pods.pop(pname, None)
                    break
                pods[pname] = obj
                if started(obj) or h.kill_reason is not None:
                    break
                reason = pod_waiting_reason(obj) or reason
                if time.monotonic() >= deadline:
                    break
            failures = 0
            # a pod was deleted (the job too?), the pod started, or the watch
            # request ended: look again rather than trust a possibly missed event
            relist = True
        except (urllib3.exceptions.HTTPError, OSError):
            # the watch request ended by the read timeout, or the network failed
            relist = True
            failures += 1
            if failures > 1:
                cluster.retry_pause(min(failures, 3))
        except Exception as exc:
            relist = True
            if status_of(exc) != 410:
                failures += 1
                log.warning("watching pods of %s failed: %s", h.identifier, api_error(exc))
                cluster.retry_pause(failures)


def _not_started(
    cluster: Cluster, h: JobHandle, timeout: float, reason: str | None, pod: dict[str, Any] | None
) -> Result:
    """The pod stayed Pending too long: delete the Job and say why."""
    try:
        cluster.delete_job(h.namespace, h.name, 0)
    except RuntimeError as exc:
        log.warning("%s", exc)
    why = f": {h.mask(reason)}" if reason else " (no reason given by Kubernetes)"
    if pod is None:
        text = f"no pod was created for job {h.identifier} within {timeout:g}s{why}"
    else:
        text = f"pod {pod['metadata']['name']} did not start within {timeout:g}s{why}"
    return Result(EXIT_LOST, h.identifier, reason=text)


def _gone(h: JobHandle, when: str) -> Result:
    if h.kill_reason is not None:
        return Result(EXIT_KILLED, h.identifier, reason=h.kill_reason)
    return Result(
        EXIT_LOST, h.identifier, reason=f"job {h.identifier} was deleted from outside {when}"
    )


# -- phase 2: the Job to its end -------------------------------------------------


def watch_job(cluster: Cluster, h: JobHandle) -> Result:
    rv: str | None = None
    relist = True
    verify = False
    failures = 0
    while True:
        if cluster.closed.is_set():
            return Result(EXIT_LOST, h.identifier, reason=_CLOSED)
        try:
            if relist:
                resp = cluster.batch().list_namespaced_job(
                    h.namespace,
                    field_selector=f"metadata.name={h.name}",
                    _preload_content=False,
                )
                data = json.loads(resp.data)
                rv = (data.get("metadata") or {}).get("resourceVersion")
                jobs = [j for j in data.get("items") or [] if j["metadata"].get("name") == h.name]
                if not jobs:
                    return _gone(h, "while its pod ran")
                done = _finished(cluster, h, jobs[0])
                if done is not None:
                    return done
                relist = verify = False
            elif verify:
                job = cluster.read_job(h.namespace, h.name)
                if job is None:
                    return _gone(h, "while its pod ran")
                done = _finished(cluster, h, job)
                if done is not None:
                    return done
                verify = False
            for ev in cluster.events(
                cluster.batch().list_namespaced_job,
                h.namespace,
                rv,
                cluster.config.watch_seconds + 30,
                field_selector=f"metadata.name={h.name}",
            ):
                obj = ev.get("object") or {}
                rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                name = (obj.get("metadata") or {}).get("name")
                if ev.get("type") == "BOOKMARK" or name != h.name:
                    continue
                if ev.get("type") == "DELETED":
                    return _gone(h, "while its pod ran")
                done = _finished(cluster, h, obj)
                if done is not None:
                    return done
            failures = 0
            # between two watch requests, read the job once: an end that a
            # watch failed to deliver is never waited for forever
            verify = True
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            # the watch ended by the read timeout or the network: resume from rv
            verify = True
            failures += 1
            if failures > 1:
                log.info("watch of %s interrupted (%s); resuming", h.identifier, exc)
                cluster.retry_pause(failures)
        except Exception as exc:
            if status_of(exc) == 410:  # our resourceVersion is too old: re-list
                relist = True
                continue
            failures += 1
            log.warning("watching job %s failed: %s", h.identifier, api_error(exc))
            relist = True
            cluster.retry_pause(failures)
        if h.kill_at is not None and time.monotonic() - h.kill_at > h.grace + 60:
            # the API did not confirm the deletion in time: do not hang the worker
            return Result(EXIT_KILLED, h.identifier, reason=h.kill_reason)


def _finished(cluster: Cluster, h: JobHandle, job: dict[str, Any]) -> Result | None:
    """The Result of a Job that has ended, ``None`` while it runs."""
    conds = conditions(job)
    if "Complete" not in conds and "Failed" not in conds:
        if (job.get("metadata") or {}).get("deletionTimestamp") and h.kill_reason is None:
            return _gone(h, "while its pod ran")
        return None
    code, detail = _exit_code(cluster, h)
    if "Complete" in conds:
        if code is None:
            return Result(0, h.identifier)
        return Result(code, h.identifier, reason=detail if code else None)
    cond = conds["Failed"]
    why = f"job failed: {cond.get('reason') or 'Failed'}"
    if cond.get("message"):
        why += f": {cond['message']}"
    if h.kill_reason is not None:
        return Result(EXIT_KILLED, h.identifier, reason=h.kill_reason)
    if code is None:
        return Result(EXIT_LOST, h.identifier, reason=h.mask(f"{detail}; {why}"))
    if code == 0:
        code = 1  # failed although the container said 0 (e.g. deadline exceeded)
    return Result(code, h.identifier, reason=h.mask(f"{detail} ({why})"))


def _exit_code(cluster: Cluster, h: JobHandle) -> tuple[int | None, str]:
    """The step container's exit code and a description, from its terminated state."""
    try:
        pods, _ = cluster.pods(h.namespace, h.name)
    except Exception as exc:
        return None, f"the pod could not be read: {api_error(exc)}"
    pod = next((p for p in pods if p["metadata"]["name"] == h.pod), None) or newest_pod(pods)
    if pod is None:
        return None, f"pod {h.pod or '(none)'} was deleted"
    status = pod.get("status") or {}
    for cs in status.get("containerStatuses") or []:
        if cs.get("name") != h.container:
            continue
        term = (cs.get("state") or {}).get("terminated")
        if term is not None and term.get("exitCode") is not None:
            code = int(term["exitCode"])
            detail = f"exit code {code}"
            if term.get("reason") and term["reason"] not in ("Completed", "Error"):
                detail += f" ({term['reason']})"
            return code, detail
    return None, f"pod {pod['metadata']['name']} has no exit code"

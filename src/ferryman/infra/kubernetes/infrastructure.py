"""``KubernetesInfrastructure``: the ``Infrastructure`` interface over the
pieces of this package (see its docstring)."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Callable
from typing import Any

from ferryman.infra.base import (
    EXIT_KILLED,
    EXIT_LOST,
    MASK,
    Infrastructure,
    LogSink,
    Result,
    StepLaunch,
)
from ferryman.infra.kubernetes.api import Cluster, api_error
from ferryman.infra.kubernetes.config import KubernetesConfig
from ferryman.infra.kubernetes.job import build_job
from ferryman.infra.kubernetes.logs import start_logs
from ferryman.infra.kubernetes.manifest import DEFAULT_CONTAINER
from ferryman.infra.kubernetes.names import is_dns_label
from ferryman.infra.kubernetes.watch import (
    JobHandle,
    container_name,
    newest_pod,
    started,
    wait_for_pod,
    watch_job,
)

#: How long ``watch`` waits for the last log lines once the Job has ended.
LOG_DRAIN_SECONDS = 30.0


def parse_identifier(identifier: str) -> tuple[str, str]:
    """``namespace/name`` → ``(namespace, name)``; ``ValueError`` when malformed."""
    ns, sep, name = identifier.partition("/")
    if not sep or not is_dns_label(ns) or not name or "/" in name:
        raise ValueError(f"not a kubernetes job identifier: {identifier!r}")
    return ns, name


class KubernetesInfrastructure(Infrastructure):
    """Run steps as Kubernetes Jobs (one Job per attempt, ``backoffLimit: 0``)."""

    kind = "kubernetes"
    config_model = KubernetesConfig
    config: KubernetesConfig
    kinds = frozenset({"python", "container"})
    reattachable = True
    separates_streams = False  # a pod has one log: stderr lines arrive as "stdout"

    def __init__(self, config: KubernetesConfig | None = None) -> None:
        super().__init__(config)
        self._cluster = Cluster(self.config)
        self._jobs: dict[str, JobHandle] = {}
        self._lock = threading.Lock()

    # -- manifest ------------------------------------------------------------------

    def manifest(self, launch: StepLaunch) -> dict[str, Any]:
        """The Job manifest for one attempt (with real secret values)."""
        return build_job(self.config, launch)

    def preview(self, launch: StepLaunch) -> dict[str, Any]:
        """The exact Job manifest ``start`` would send, secret values masked."""
        job = self.manifest(launch)
        secret_names = set(launch.secrets)
        for c in job["spec"]["template"]["spec"].get("containers") or []:
            for e in c.get("env") or []:
                if e.get("name") in secret_names and "value" in e:
                    e["value"] = MASK
        masked: dict[str, Any] = _mask_deep(job, launch.mask)
        return masked

    # -- Infrastructure ------------------------------------------------------------

    def start(self, launch: StepLaunch, sink: LogSink) -> str:
        job = self.manifest(launch)
        ns = job["metadata"]["namespace"]
        try:
            resp = self._cluster.batch().create_namespaced_job(ns, job, _preload_content=False)
        except Exception as exc:
            raise RuntimeError(
                launch.mask(f"could not create the job in namespace {ns}: {api_error(exc)}")
            ) from None
        created = json.loads(resp.data)
        name = created["metadata"]["name"]
        handle = JobHandle(
            ns,
            name,
            job["spec"]["template"]["spec"]["containers"][0]["name"],
            sink,
            launch.mask,
        )
        with self._lock:
            self._jobs[handle.identifier] = handle
        return handle.identifier

    def attach(self, identifier: str, sink: LogSink, since: dt.datetime | None = None) -> bool:
        """Follow a job a lost worker started. The pod's whole log is replayed
        (``since`` is not used: the pod's clock and ours may differ), so lines
        the lost worker stored come again; none are lost."""
        try:
            ns, name = parse_identifier(identifier)
        except ValueError:
            return False
        try:
            job = self._cluster.read_job(ns, name)
            if job is None:
                return False
            pods = self._cluster.pods(ns, name)[0]
        except Exception as exc:
            raise RuntimeError(f"could not read job {identifier}: {api_error(exc)}") from None
        handle = JobHandle(ns, name, container_name(job), sink)
        with self._lock:
            self._jobs[identifier] = handle
        pod = newest_pod(pods)
        if pod is not None and started(pod):
            handle.pod = pod["metadata"]["name"]
            start_logs(self._cluster, handle)
        return True

    def watch(self, identifier: str) -> Result:
        try:
            ns, name = parse_identifier(identifier)
        except ValueError as exc:
            return Result(EXIT_LOST, identifier, reason=str(exc))
        with self._lock:
            handle = self._jobs.get(identifier)
        if handle is None:  # not ours: watch it, without logs
            try:
                job = self._cluster.read_job(ns, name)
            except Exception:
                job = None  # the watch below retries and tells what happened
            handle = JobHandle(ns, name, container_name(job) if job else DEFAULT_CONTAINER, None)
            with self._lock:
                self._jobs[identifier] = handle
        try:
            early = wait_for_pod(self._cluster, handle)
            if early is not None:
                return early
            start_logs(self._cluster, handle)
            result = watch_job(self._cluster, handle)
            thread = handle.log_thread
            if thread is not None:
                # a killed or lost pod's log may never end by itself: wait less
                lost = result.status_code in (EXIT_KILLED, EXIT_LOST)
                thread.join(2.0 if lost else LOG_DRAIN_SECONDS)
            return result
        finally:
            handle.stop_logs.set()
            with self._lock:
                self._jobs.pop(identifier, None)

    def kill(self, identifier: str, grace_seconds: float | None = None) -> None:
        """Delete the Job with foreground propagation (its pods first).

        Idempotent: a Job that is already gone is fine.
        """
        try:
            ns, name = parse_identifier(identifier)
        except ValueError:
            return
        # None: the pods' own terminationGracePeriodSeconds
        grace = None if grace_seconds is None else max(0, round(grace_seconds))
        with self._lock:
            handle = self._jobs.get(identifier)
        if handle is not None and handle.kill_reason is None:
            shown = "the pods' default" if grace is None else f"{grace}s"
            handle.kill_reason = f"killed: job deleted (foreground, {shown} grace)"
            handle.kill_at = time.monotonic()
            handle.grace = 30 if grace is None else grace
        self._cluster.delete_job(ns, name, grace)

    def close(self) -> None:
        """Stop following logs and release the HTTP connections."""
        self._cluster.closed.set()
        with self._lock:
            for h in self._jobs.values():
                h.stop_logs.set()
        self._cluster.close()


def _mask_deep(value: Any, mask: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {k: _mask_deep(v, mask) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_deep(v, mask) for v in value]
    return value

"""The ``kubernetes`` infrastructure (SPEC §7): each attempt is a batch/v1 Job.

The Job is built from a base manifest (the configuration's ``job_manifest`` or
a minimal default) + shortcut fields + RFC 6902 JSON-patch customizations
(see ``k8s_manifest``). It always has ``backoffLimit: 0``: retries are
ferryman's, never Kubernetes'.

Life of an attempt (the worker calls these from its own threads; the official
client is blocking):

- ``start`` creates the Job (``generateName``) and returns ``namespace/name``
  at once, so the identifier is stored before anything else can go wrong.
- ``watch`` first waits for the Job's pod to leave ``Pending``, at most
  ``pod_watch_timeout_seconds``; past that the Job is deleted and the step
  fails with the pod's reason (``ImagePullBackOff: …``, ``Unschedulable: …``).
  Then it follows the pod's log into the sink and watches the Job until it
  completes or fails, with **no** deadline of its own: a watch request that
  ends is renewed from the last resourceVersion, a ``410 Gone`` re-lists and
  carries on, and transient API errors are retried with backoff. The exit
  code comes from the container's ``terminated`` state. A Job or pod deleted
  by somebody else fails the step with that reason.
- ``kill`` deletes the Job with ``propagationPolicy: Foreground`` (its pods
  go first), giving the pods ``grace_seconds``.
- ``attach`` (after a worker restart) finds the Job's pod and replays its log
  from the beginning: lines the lost worker already stored appear again, but
  none is lost and a python step's result line is always seen.

Secret values may be sent to the API in the container's env (Kubernetes
stores them in the Job object); ``preview``, logs and errors mask them.
Kubernetes Secrets referenced with ``valueFrom`` in ``customizations`` keep
them out of the Job object altogether.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import urllib3

from ferryman.infra.base import (
    EXIT_KILLED,
    EXIT_LOST,
    MASK,
    Infrastructure,
    LogSink,
    Result,
    StepLaunch,
)
from ferryman.infra.k8s_manifest import (
    DEFAULT_CONTAINER,
    KubernetesConfig,
    ManifestError,
    build_job,
    is_dns_label,
    load_customizations,
)

__all__ = [
    "KubernetesConfig",
    "KubernetesInfrastructure",
    "ManifestError",
    "load_customizations",
    "parse_identifier",
]

log = logging.getLogger(__name__)

_STARTING = ("ContainerCreating", "PodInitializing")
#: How long ``watch`` waits for the last log lines once the Job has ended.
LOG_DRAIN_SECONDS = 30.0
#: A log stream silent this long is reopened (lines are de-duplicated).
LOG_READ_TIMEOUT = 300.0
_CLOSED = "the kubernetes infrastructure was closed while watching (the job may still run)"


# -- identifiers and API helpers --------------------------------------------------


def parse_identifier(identifier: str) -> tuple[str, str]:
    """``namespace/name`` → ``(namespace, name)``; ``ValueError`` when malformed."""
    ns, sep, name = identifier.partition("/")
    if not sep or not is_dns_label(ns) or not name or "/" in name:
        raise ValueError(f"not a kubernetes job identifier: {identifier!r}")
    return ns, name


def _api_error(exc: Exception) -> str:
    """A short, secret-free description of an API error."""
    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, ApiException):
        message = ""
        try:
            body = json.loads(exc.body or "{}")
            message = str(body.get("message") or "")
        except (ValueError, AttributeError):
            message = ""
        text = f"{exc.status} {exc.reason or ''}".strip()
        return f"{text}: {message}" if message else text
    return f"{type(exc).__name__}: {exc}"


def _status(exc: Exception) -> int | None:
    from kubernetes.client.exceptions import ApiException

    return exc.status if isinstance(exc, ApiException) else None


def _conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    conds = (obj.get("status") or {}).get("conditions") or []
    return {c.get("type"): c for c in conds if c.get("status") == "True"}


def _pod_waiting_reason(pod: dict[str, Any]) -> str | None:
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


def _started(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") not in (None, "", "Pending")


@dataclass
class _Job:
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
        return f"{self.namespace}/{self.name}"


class KubernetesInfrastructure(Infrastructure):
    """Run steps as Kubernetes Jobs (one Job per attempt, ``backoffLimit: 0``)."""

    kind = "kubernetes"
    config_model = KubernetesConfig
    config: KubernetesConfig
    reattachable = True

    def __init__(self, config: KubernetesConfig | None = None) -> None:
        super().__init__(config)
        self._client: tuple[Any, Any, Any] | None = None
        self._client_lock = threading.Lock()
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()

    # -- client ------------------------------------------------------------------

    def _api(self) -> tuple[Any, Any, Any]:
        """``(ApiClient, BatchV1Api, CoreV1Api)``, created on first use."""
        from kubernetes import client as k8s

        with self._client_lock:
            if self._client is None:
                api = self._make_client()
                self._client = (api, k8s.BatchV1Api(api), k8s.CoreV1Api(api))
            return self._client

    def _make_client(self) -> Any:
        from kubernetes import client as k8s
        from kubernetes import config as k8s_config
        from kubernetes.config.config_exception import ConfigException

        c = self.config
        cfg = k8s.Configuration()
        try:
            if c.api_server:
                cfg.host = c.api_server.rstrip("/")
                if c.token is not None:
                    cfg.api_key = {"authorization": c.token.get_secret_value()}
                    cfg.api_key_prefix = {"authorization": "Bearer"}
                cfg.ssl_ca_cert = c.ca_cert
                cfg.verify_ssl = c.verify_ssl
            elif c.in_cluster or (
                not c.kubeconfig and not c.context and os.environ.get("KUBERNETES_SERVICE_HOST")
            ):
                k8s_config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
            else:
                k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
                    config_file=c.kubeconfig, context=c.context, client_configuration=cfg
                )
        except (ConfigException, OSError, ValueError) as exc:
            raise RuntimeError(f"kubernetes credentials could not be loaded: {exc}") from None
        cfg.connection_pool_maxsize = 64  # one watch + one log stream per running step
        return k8s.ApiClient(cfg)

    def _batch(self) -> Any:
        return self._api()[1]

    def _core(self) -> Any:
        return self._api()[2]

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
            resp = self._batch().create_namespaced_job(ns, job, _preload_content=False)
        except Exception as exc:
            raise RuntimeError(
                launch.mask(f"could not create the job in namespace {ns}: {_api_error(exc)}")
            ) from None
        created = json.loads(resp.data)
        name = created["metadata"]["name"]
        handle = _Job(
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
            job = self._read_job(ns, name)
            if job is None:
                return False
            pods = self._pods(ns, name)[0]
        except Exception as exc:
            raise RuntimeError(f"could not read job {identifier}: {_api_error(exc)}") from None
        handle = _Job(ns, name, _container_name(job), sink)
        with self._lock:
            self._jobs[identifier] = handle
        pod = _newest(pods)
        if pod is not None and _started(pod):
            handle.pod = pod["metadata"]["name"]
            self._start_logs(handle)
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
                job = self._read_job(ns, name)
            except Exception:
                job = None  # the watch below retries and tells what happened
            handle = _Job(ns, name, _container_name(job) if job else DEFAULT_CONTAINER, None)
            with self._lock:
                self._jobs[identifier] = handle
        try:
            early = self._wait_for_pod(handle)
            if early is not None:
                return early
            self._start_logs(handle)
            result = self._watch_job(handle)
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
        self._delete_job(ns, name, grace)

    def close(self) -> None:
        """Stop following logs and release the HTTP connections."""
        self._closed.set()
        with self._lock:
            for h in self._jobs.values():
                h.stop_logs.set()
        with self._client_lock:
            if self._client is not None:
                try:
                    self._client[0].close()
                except Exception:  # pragma: no cover - best effort
                    log.debug("closing the kubernetes client failed", exc_info=True)
                self._client = None

    # -- API helpers ---------------------------------------------------------------

    def _delete_job(self, ns: str, name: str, grace: int | None) -> None:
        for attempt in range(5):
            try:
                self._batch().delete_namespaced_job(
                    name,
                    ns,
                    propagation_policy="Foreground",
                    grace_period_seconds=grace,
                    _preload_content=False,
                )
                return
            except Exception as exc:
                if _status(exc) == 404:
                    return
                if attempt == 4:
                    raise RuntimeError(
                        f"could not delete job {ns}/{name}: {_api_error(exc)}"
                    ) from None
                log.warning("deleting job %s/%s failed (%s); retrying", ns, name, _api_error(exc))
                time.sleep(0.5 * 2**attempt)

    def _read_job(self, ns: str, name: str) -> dict[str, Any] | None:
        """The Job as a dict, ``None`` if it does not exist (other errors propagate)."""
        try:
            resp = self._batch().read_namespaced_job(name, ns, _preload_content=False)
        except Exception as exc:
            if _status(exc) == 404:
                return None
            raise
        data: dict[str, Any] = json.loads(resp.data)
        return data

    def _pods(self, ns: str, job: str) -> tuple[list[dict[str, Any]], str | None]:
        """The Job's pods and the list's resourceVersion."""
        resp = self._core().list_namespaced_pod(
            ns, label_selector=f"job-name={job}", _preload_content=False
        )
        data = json.loads(resp.data)
        pods = [p for p in data.get("items") or [] if _pod_of(p, job)]
        return pods, (data.get("metadata") or {}).get("resourceVersion")

    def _events(
        self, list_fn: Any, ns: str, rv: str | None, read_timeout: float, **kw: Any
    ) -> Iterator[dict[str, Any]]:
        """One watch request: raw events until the server or the read timeout ends it."""
        from kubernetes import watch as k8s_watch

        w = k8s_watch.Watch()  # type: ignore[no-untyped-call]
        kwargs: dict[str, Any] = dict(
            timeout_seconds=self.config.watch_seconds,
            allow_watch_bookmarks=True,
            _request_timeout=(10, max(read_timeout, 0.1)),
            deserialize=False,
            **kw,
        )
        if rv:
            kwargs["resource_version"] = rv
        try:
            yield from w.stream(list_fn, ns, **kwargs)  # type: ignore[no-untyped-call]
        finally:
            w.stop()  # type: ignore[no-untyped-call]

    def _retry_pause(self, failures: int) -> None:
        delay = min(0.2 * 2**failures, 10.0) * (0.5 + random.random() / 2)
        self._closed.wait(delay)

    # -- phase 1: the pod leaves Pending ------------------------------------------

    def _wait_for_pod(self, h: _Job) -> Result | None:
        """Wait until the Job's pod runs (or ended); a Result when the attempt is over."""
        timeout = self.config.pod_watch_timeout_seconds
        deadline = time.monotonic() + timeout
        pods: dict[str, dict[str, Any]] = {}
        rv: str | None = None
        relist = True
        failures = 0
        reason: str | None = None
        while True:
            if h.kill_reason is not None:
                return Result(EXIT_KILLED, h.identifier, reason=h.kill_reason)
            if self._closed.is_set():
                return Result(EXIT_LOST, h.identifier, reason=_CLOSED)
            try:
                if relist:
                    job = self._read_job(h.namespace, h.name)
                    if job is None:
                        return self._gone(h, "before its pod started")
                    if _conditions(job).keys() & {"Complete", "Failed"}:
                        found, _ = self._pods(h.namespace, h.name)
                        newest = _newest(found)
                        h.pod = newest["metadata"]["name"] if newest else None
                        return None  # phase 2 reports how it ended
                    found, rv = self._pods(h.namespace, h.name)
                    pods = {p["metadata"]["name"]: p for p in found}
                    relist = False
                newest = _newest(list(pods.values()))
                if newest is not None:
                    if _started(newest):
                        h.pod = newest["metadata"]["name"]
                        return None
                    reason = _pod_waiting_reason(newest) or reason
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return self._not_started(h, timeout, reason, newest)
                for ev in self._events(
                    self._core().list_namespaced_pod,
                    h.namespace,
                    rv,
                    remaining + 0.5,
                    label_selector=f"job-name={h.name}",
                ):
                    obj = ev.get("object") or {}
                    rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                    if ev.get("type") == "BOOKMARK" or not _pod_of(obj, h.name):
                        continue
                    pname = obj["metadata"]["name"]
                    if ev.get("type") == "DELETED":
                        pods.pop(pname, None)
                        break
                    pods[pname] = obj
                    if _started(obj) or h.kill_reason is not None:
                        break
                    reason = _pod_waiting_reason(obj) or reason
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
                    self._retry_pause(min(failures, 3))
            except Exception as exc:
                relist = True
                if _status(exc) != 410:
                    failures += 1
                    log.warning("watching pods of %s failed: %s", h.identifier, _api_error(exc))
                    self._retry_pause(failures)

    def _not_started(
        self, h: _Job, timeout: float, reason: str | None, pod: dict[str, Any] | None
    ) -> Result:
        """The pod stayed Pending too long: delete the Job and say why."""
        try:
            self._delete_job(h.namespace, h.name, 0)
        except RuntimeError as exc:
            log.warning("%s", exc)
        why = f": {h.mask(reason)}" if reason else " (no reason given by Kubernetes)"
        if pod is None:
            text = f"no pod was created for job {h.identifier} within {timeout:g}s{why}"
        else:
            text = f"pod {pod['metadata']['name']} did not start within {timeout:g}s{why}"
        return Result(EXIT_LOST, h.identifier, reason=text)

    def _gone(self, h: _Job, when: str) -> Result:
        if h.kill_reason is not None:
            return Result(EXIT_KILLED, h.identifier, reason=h.kill_reason)
        return Result(
            EXIT_LOST, h.identifier, reason=f"job {h.identifier} was deleted from outside {when}"
        )

    # -- phase 2: the Job to its end -------------------------------------------------

    def _watch_job(self, h: _Job) -> Result:
        rv: str | None = None
        relist = True
        verify = False
        failures = 0
        while True:
            if self._closed.is_set():
                return Result(EXIT_LOST, h.identifier, reason=_CLOSED)
            try:
                if relist:
                    resp = self._batch().list_namespaced_job(
                        h.namespace,
                        field_selector=f"metadata.name={h.name}",
                        _preload_content=False,
                    )
                    data = json.loads(resp.data)
                    rv = (data.get("metadata") or {}).get("resourceVersion")
                    jobs = [
                        j for j in data.get("items") or [] if j["metadata"].get("name") == h.name
                    ]
                    if not jobs:
                        return self._gone(h, "while its pod ran")
                    done = self._finished(h, jobs[0])
                    if done is not None:
                        return done
                    relist = verify = False
                elif verify:
                    job = self._read_job(h.namespace, h.name)
                    if job is None:
                        return self._gone(h, "while its pod ran")
                    done = self._finished(h, job)
                    if done is not None:
                        return done
                    verify = False
                for ev in self._events(
                    self._batch().list_namespaced_job,
                    h.namespace,
                    rv,
                    self.config.watch_seconds + 30,
                    field_selector=f"metadata.name={h.name}",
                ):
                    obj = ev.get("object") or {}
                    rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                    name = (obj.get("metadata") or {}).get("name")
                    if ev.get("type") == "BOOKMARK" or name != h.name:
                        continue
                    if ev.get("type") == "DELETED":
                        return self._gone(h, "while its pod ran")
                    done = self._finished(h, obj)
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
                    self._retry_pause(failures)
            except Exception as exc:
                if _status(exc) == 410:  # our resourceVersion is too old: re-list
                    relist = True
                    continue
                failures += 1
                log.warning("watching job %s failed: %s", h.identifier, _api_error(exc))
                relist = True
                self._retry_pause(failures)
            if h.kill_at is not None and time.monotonic() - h.kill_at > h.grace + 60:
                # the API did not confirm the deletion in time: do not hang the worker
                return Result(EXIT_KILLED, h.identifier, reason=h.kill_reason)

    def _finished(self, h: _Job, job: dict[str, Any]) -> Result | None:
        """The Result of a Job that has ended, ``None`` while it runs."""
        conds = _conditions(job)
        if "Complete" not in conds and "Failed" not in conds:
            if (job.get("metadata") or {}).get("deletionTimestamp") and h.kill_reason is None:
                return self._gone(h, "while its pod ran")
            return None
        code, detail = self._exit_code(h)
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

    def _exit_code(self, h: _Job) -> tuple[int | None, str]:
        """The step container's exit code and a description, from its terminated state."""
        try:
            pods, _ = self._pods(h.namespace, h.name)
        except Exception as exc:
            return None, f"the pod could not be read: {_api_error(exc)}"
        pod = next((p for p in pods if p["metadata"]["name"] == h.pod), None) or _newest(pods)
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

    # -- logs ----------------------------------------------------------------------

    def _start_logs(self, h: _Job) -> None:
        if h.sink is None or h.pod is None or h.log_thread is not None:
            return
        h.log_thread = threading.Thread(
            target=self._follow_logs, args=(h,), name=f"ferryman-k8s-log-{h.name}", daemon=True
        )
        h.log_thread.start()

    def _follow_logs(self, h: _Job) -> None:
        """Stream the pod's log into the sink until the container ends.

        A log stream that breaks while the container still runs is reopened;
        lines already delivered are skipped by their timestamps. Once the
        container has ended the log is read one last time (from shortly
        before the last line seen), so a stream that broke just as the
        container ended loses nothing.
        """
        failures = 0
        first = True
        while not h.stop_logs.is_set() and not self._closed.is_set():
            ended = not first and self._container_done(h)
            first = False
            try:
                kwargs: dict[str, Any] = {}
                since = _since_seconds(h.last_ts) if ended else None
                if since is not None:
                    kwargs["since_seconds"] = since
                resp = self._core().read_namespaced_pod_log(
                    h.pod,
                    h.namespace,
                    container=h.container,
                    follow=True,
                    timestamps=True,
                    _preload_content=False,
                    _request_timeout=(10, LOG_READ_TIMEOUT),
                    **kwargs,
                )
                try:
                    self._pump(h, resp)
                finally:
                    resp.release_conn()
            except Exception as exc:
                status = _status(exc)
                if status == 404:
                    return  # the pod is gone
                failures += 1
                if status != 400:  # 400: "container is waiting to start"
                    log.info("log stream of %s broke: %s", h.identifier, _api_error(exc))
                self._retry_pause(min(failures, 5))
                continue
            if ended:
                return  # that read began after the container ended: it held everything
            if not self._container_done(h):
                self._retry_pause(1)  # the stream ended early: reopen it shortly

    def _container_done(self, h: _Job) -> bool:
        """Whether the step container has terminated (or the pod is gone)."""
        try:
            resp = self._core().read_namespaced_pod(h.pod, h.namespace, _preload_content=False)
        except Exception as exc:
            return _status(exc) == 404
        pod = json.loads(resp.data)
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return True
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            if cs.get("name") == h.container and (cs.get("state") or {}).get("terminated"):
                return True
        return False

    def _pump(self, h: _Job, resp: Any) -> None:
        # lines stamped with the last timestamp we delivered before a reconnect
        # come again first: skip as many as we already delivered
        with h.log_lock:
            skip = h.at_last_ts
        buffer = b""
        for chunk in resp.stream(amt=None, decode_content=True):
            if h.stop_logs.is_set():
                return
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for raw in lines:
                skip = self._deliver(h, raw.decode("utf-8", errors="replace"), skip)
        if buffer:
            self._deliver(h, buffer.decode("utf-8", errors="replace"), skip)

    def _deliver(self, h: _Job, line: str, skip: int) -> int:
        """Pass one ``TIMESTAMP text`` line to the sink unless already delivered."""
        ts, sep, text = line.partition(" ")
        if not sep or not ts[:1].isdigit():
            ts, text = "", line
        with h.log_lock:
            if ts:
                if h.last_ts is not None and ts < h.last_ts:
                    return skip
                if ts == h.last_ts:
                    if skip > 0:
                        return skip - 1
                    h.at_last_ts += 1
                else:
                    h.last_ts, h.at_last_ts, skip = ts, 1, 0
        assert h.sink is not None
        try:
            h.sink("stdout", text[:-1] if text.endswith("\r") else text)
        except Exception:
            log.exception("log sink failed for %s", h.identifier)
        return skip


def _since_seconds(last_ts: str | None) -> int | None:
    """``sinceSeconds`` that surely covers everything after ``last_ts``.

    A minute of margin absorbs clock skew between this host and the node;
    the lines read twice are dropped by their timestamps.
    """
    if not last_ts:
        return None
    try:
        seen = dt.datetime.fromisoformat(last_ts[:26]).replace(tzinfo=dt.UTC)
    except ValueError:
        return None
    return max(1, math.ceil((dt.datetime.now(dt.UTC) - seen).total_seconds()) + 60)


def _container_name(job: dict[str, Any]) -> str:
    """Name of the step's container (the first one) in a Job object."""
    spec = ((job.get("spec") or {}).get("template") or {}).get("spec") or {}
    containers = spec.get("containers") or [{}]
    return str(containers[0].get("name") or DEFAULT_CONTAINER)


def _pod_of(pod: dict[str, Any], job: str) -> bool:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return job in (labels.get("job-name"), labels.get("batch.kubernetes.io/job-name"))


def _newest(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not pods:
        return None
    return max(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "")


def _mask_deep(value: Any, mask: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {k: _mask_deep(v, mask) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_deep(v, mask) for v in value]
    return value

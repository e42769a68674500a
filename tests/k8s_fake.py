"""A fake Kubernetes cluster for tests: the kmock emulator + a test-written Job controller.

``FakeCluster`` runs a real HTTP server (``kmock.KubernetesEmulator``) on
loopback in its own thread and event loop, so the official (blocking)
``kubernetes`` client talks to it exactly as to an API server. On top of the
emulator's in-memory object store it adds what a cluster does and kmock does
not:

- ``generateName``, ``uid``, ``creationTimestamp`` and ``resourceVersion``;
- a Job controller: for each Job it creates one pod (labels ``job-name`` and
  ``batch.kubernetes.io/job-name``), records the Job's status, deletes the
  pods of a deleted Job, and fails the Job (``BackoffLimitExceeded``) when its
  pod is deleted;
- foreground deletion: a Job deleted with ``propagationPolicy=Foreground``
  gets a ``deletionTimestamp`` and stays until its pods are gone; each pod's
  process gets SIGTERM, and SIGKILL after the request's
  ``gracePeriodSeconds`` (default 30), as a kubelet does;
- a kubelet: the pod goes Pending → Running → Succeeded/Failed by running the
  container's command as a *local process* (``python`` means this
  interpreter) with the container's env; its output is the pod's log, served
  on ``pods/NAME/log`` (``follow`` and ``timestamps`` supported). Images named
  in ``unpullable`` stay Pending with ``ErrImagePull``/``ImagePullBackOff``;
  images in ``unschedulable`` stay Pending with an ``Unschedulable`` condition.

Everything the controller changes goes through the emulator's HTTP API, so
watchers see the changes as watch events, as in a cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import json
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import kmock

T = TypeVar("T")

JOBS = kmock.resource("batch", "v1", "jobs")
PODS = kmock.resource("", "v1", "pods")


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _stamp() -> str:
    """RFC 3339 with nanoseconds, fixed width (sorts as text)."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


class Emulator(kmock.KubernetesEmulator):  # type: ignore[misc]
    """kmock's emulator plus generateName, uid, timestamps and resourceVersions."""

    _rv = itertools.count(1000)
    #: (namespace, job) → grace seconds of a foreground deletion in progress
    graces: dict[tuple[str, str], float]

    async def _handle(self, request: Any) -> Any:
        if (
            request.action == kmock.action.DELETE
            and request.resource == JOBS
            and request.name
            and request.params.get("propagationPolicy") == "Foreground"
        ):
            key = (JOBS, request.namespace, request.name)
            if key in self.objects and not self.objects[key].deleted:
                meta = self.objects[key].get("metadata") or {}
                if not meta.get("deletionTimestamp"):
                    # the finalizer makes the emulator only stamp deletionTimestamp;
                    # the controller removes it once the pods are gone
                    self.objects[key].patch({"metadata": {"finalizers": ["foregroundDeletion"]}})
                    grace = request.params.get("gracePeriodSeconds")
                    self.graces[(request.namespace, request.name)] = float(grace or 30)
        data = request.data
        if request.resource is not None and isinstance(data, dict):
            meta = (
                data.setdefault("metadata", {}) if request.action == kmock.action.CREATE else None
            )
            if meta is not None:
                if not meta.get("name") and meta.get("generateName"):
                    meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
                meta.setdefault("namespace", request.namespace)
                meta["uid"] = str(uuid.uuid4())
                meta["creationTimestamp"] = _stamp()
            if request.action in (kmock.action.CREATE, kmock.action.UPDATE):
                data.setdefault("metadata", {})["resourceVersion"] = str(next(self._rv))
        return await super()._handle(request)

    async def _serve_watch(self, request: Any) -> AsyncIterator[Any]:
        """kmock's watch, ended after ``timeoutSeconds`` as a real API server does."""
        stream = super()._serve_watch(request)
        timeout = float(request.params.get("timeoutSeconds") or 0)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout else None
        try:
            while True:
                wait = None if deadline is None else deadline - loop.time()
                if wait is not None and wait <= 0:
                    return
                try:
                    item = await asyncio.wait_for(stream.__anext__(), wait)
                except (TimeoutError, StopAsyncIteration):
                    return
                yield item
        finally:
            await stream.aclose()


@dataclass
class _Pod:
    namespace: str
    name: str
    job: str
    image: str
    lines: list[tuple[str, str]] = field(default_factory=list)
    started: bool = False
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    proc: asyncio.subprocess.Process | None = None
    deleted: bool = False
    #: loop time after which a terminating pod's process is killed (None: not terminating)
    kill_at: float | None = None


class FakeCluster:
    """Emulator + controller + kubelet in a background thread (see module doc)."""

    def __init__(self) -> None:
        self.unpullable: set[str] = set()
        self.unschedulable: set[str] = set()
        self.start_delay = 0.05
        #: each following log request pops a number N and ends after N lines
        #: (as when a kubelet connection breaks)
        self.log_cuts: list[int] = []
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._k: Any = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="fake-k8s", daemon=True)
        self._pods: dict[tuple[str, str], _Pod] = {}
        self._jobs_seen: set[tuple[str, str]] = set()
        self._jobs_done: set[tuple[str, str]] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.errors: list[str] = []

    # -- lifecycle (test thread) -------------------------------------------------

    def __enter__(self) -> FakeCluster:
        self._thread.start()
        if not self._ready.wait(15):
            raise RuntimeError("the fake cluster did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)

    def call(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(emulator)`` in the server's loop (kmock is not thread-safe)."""
        assert self._loop is not None

        async def run() -> T:
            return fn(self._k)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    def requests(self) -> list[Any]:
        """Every request the emulator received so far."""
        return self.call(lambda k: list(k))

    def objects(self, resource: Any) -> list[dict[str, Any]]:
        """The live objects of one resource."""

        def get(k: Any) -> list[dict[str, Any]]:
            return [
                json.loads(json.dumps(o.raw))
                for (res, _ns, _n), o in k.objects.items()
                if res == resource and not o.deleted
            ]

        return self.call(get)

    def settled(self, resource: Any, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The live objects of one resource once none is left, or after
        ``timeout``: a foreground deletion ends a moment after the request."""
        deadline = time.monotonic() + timeout
        while (found := self.objects(resource)) and time.monotonic() < deadline:
            time.sleep(0.02)
        return found

    def delete(self, resource: Any, namespace: str, name: str) -> int:
        """Delete an object through the API (as ``kubectl delete`` would)."""
        assert self._loop is not None
        path = _path(resource, namespace, name)

        async def run() -> int:
            resp = await self._k.delete(path)
            return int(resp.status)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    # -- the loop (server thread) ----------------------------------------------

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with Emulator() as k, kmock.Server(k) as server:
            self._k = k
            k.graces = {}
            k.resources["batch/v1/jobs"] = {}
            k.resources["v1/pods"] = {}
            k[PODS, kmock.subresource("log")] << self._serve_log
            self.url = str(server.url).rstrip("/")
            controller = asyncio.create_task(self._control())
            self._ready.set()
            await self._stop.wait()
            controller.cancel()
            for pod in self._pods.values():
                _terminate(pod)
            for t in list(self._tasks):
                t.cancel()
            await asyncio.gather(controller, *self._tasks, return_exceptions=True)
            # Reap every pod process before this loop closes: a child still
            # unreaped when the loop is gone warns later, in whatever test runs then.
            procs = [p.proc for p in self._pods.values() if p.proc is not None]
            for proc in procs:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(proc.wait(), 5)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _control(self) -> None:
        while True:
            try:
                await self._reconcile()
            except Exception as exc:  # keep the controller alive, report to the test
                self.errors.append(f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(0.02)

    async def _reconcile(self) -> None:
        k = self._k
        jobs = {
            (ns, n): o.raw
            for (res, ns, n), o in list(k.objects.items())
            if res == JOBS and not o.deleted
        }
        for key, job in jobs.items():
            if key not in self._jobs_seen:
                self._jobs_seen.add(key)
                await self._create_pod(key, job)
            if (job.get("metadata") or {}).get("deletionTimestamp"):
                await self._delete_foreground(key)
        pods = {
            (ns, n) for (res, ns, n), o in list(k.objects.items()) if res == PODS and not o.deleted
        }
        for key, pod in list(self._pods.items()):
            if pod.deleted:
                continue
            if (pod.namespace, pod.job) not in jobs:
                # the job is gone: garbage-collect its pod
                pod.deleted = True
                _terminate(pod)
                if key in pods:
                    await k.delete(_path(PODS, pod.namespace, pod.name))
            elif key not in pods:
                # deleted from outside: the job controller counts it as failed
                pod.deleted = True
                _terminate(pod)
                await self._finish_job(
                    pod,
                    failed=True,
                    reason="BackoffLimitExceeded",
                    message="Job has reached the specified backoff limit",
                )

    async def _delete_foreground(self, key: tuple[str, str]) -> None:
        """One step of a foreground deletion: SIGTERM the Job's pods, SIGKILL
        them after the grace, and once they have all ended delete them, then
        release the Job (the emulator then deletes it)."""
        loop = asyncio.get_running_loop()
        pods = [p for p in self._pods.values() if (p.namespace, p.job) == key and not p.deleted]
        for pod in pods:
            running = pod.proc is not None and pod.proc.returncode is None
            if pod.kill_at is None:
                pod.kill_at = loop.time() + self._k.graces.get(key, 30.0)
                if running:
                    _signal(pod, signal.SIGTERM)
            elif running and loop.time() >= pod.kill_at:
                _signal(pod, signal.SIGKILL)
        if any(p.proc is not None and not p.ended.is_set() for p in pods):
            return
        for pod in pods:
            pod.deleted = True
            _terminate(pod)
            await self._k.delete(_path(PODS, pod.namespace, pod.name))
        await self._patch(JOBS, key[0], key[1], {"metadata": {"finalizers": []}})

    async def _create_pod(self, key: tuple[str, str], job: dict[str, Any]) -> None:
        ns, name = key
        template = job["spec"]["template"]
        labels = dict((template.get("metadata") or {}).get("labels") or {})
        labels.update(
            {
                "job-name": name,
                "batch.kubernetes.io/job-name": name,
                "controller-uid": job["metadata"]["uid"],
            }
        )
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "generateName": f"{name}-",
                "namespace": ns,
                "labels": labels,
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": name,
                        "uid": job["metadata"]["uid"],
                        "controller": True,
                    }
                ],
            },
            "spec": template["spec"],
            "status": {"phase": "Pending"},
        }
        resp = await self._k.post(_path(PODS, ns), json=body)
        created = await resp.json()
        pname = created["metadata"]["name"]
        container = template["spec"]["containers"][0]
        pod = _Pod(ns, pname, name, container.get("image", ""))
        self._pods[(ns, pname)] = pod
        await self._patch(JOBS, ns, name, {"status": {"active": 1, "startTime": _now()}})
        self._spawn(self._kubelet(pod, container))

    async def _kubelet(self, pod: _Pod, container: dict[str, Any]) -> None:
        cname = container.get("name", "main")
        await asyncio.sleep(self.start_delay)
        if pod.image in self.unpullable:
            for reason in ("ErrImagePull", "ImagePullBackOff"):
                await self._patch_pod(
                    pod,
                    {
                        "status": {
                            "phase": "Pending",
                            "containerStatuses": [
                                {
                                    "name": cname,
                                    "ready": False,
                                    "restartCount": 0,
                                    "image": pod.image,
                                    "imageID": "",
                                    "state": {
                                        "waiting": {
                                            "reason": reason,
                                            "message": f'Back-off pulling image "{pod.image}"',
                                        }
                                    },
                                }
                            ],
                        }
                    },
                )
                await asyncio.sleep(0.1)
            return
        if pod.image in self.unschedulable:
            await self._patch_pod(
                pod,
                {
                    "status": {
                        "phase": "Pending",
                        "conditions": [
                            {
                                "type": "PodScheduled",
                                "status": "False",
                                "reason": "Unschedulable",
                                "message": "0/3 nodes are available: 3 Insufficient cpu.",
                            }
                        ],
                    }
                },
            )
            return
        command = list(container.get("command") or []) + list(container.get("args") or [])
        if command and command[0] in ("python", "python3"):
            command[0] = sys.executable
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        env.update({e["name"]: e["value"] for e in container.get("env") or [] if "value" in e})
        if pod.deleted:
            return
        pod.proc = await asyncio.create_subprocess_exec(
            *(command or [sys.executable, "-c", "pass"]),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        pod.started = True
        await self._patch_pod(
            pod,
            {
                "status": {
                    "phase": "Running",
                    "startTime": _now(),
                    "containerStatuses": [
                        {
                            "name": cname,
                            "ready": True,
                            "restartCount": 0,
                            "image": pod.image,
                            "imageID": "",
                            "state": {"running": {"startedAt": _now()}},
                        }
                    ],
                }
            },
        )
        assert pod.proc.stdout is not None
        async for raw in pod.proc.stdout:
            pod.lines.append((_stamp(), raw.decode("utf-8", "replace").rstrip("\n")))
            pod.changed.set()
        code = await pod.proc.wait()
        pod.ended.set()
        pod.changed.set()
        if pod.deleted or pod.kill_at is not None:
            return  # deleted, or ended by its Job's deletion: no outcome to record
        await self._patch_pod(
            pod,
            {
                "status": {
                    "phase": "Succeeded" if code == 0 else "Failed",
                    "containerStatuses": [
                        {
                            "name": cname,
                            "ready": False,
                            "restartCount": 0,
                            "image": pod.image,
                            "imageID": "",
                            "state": {
                                "terminated": {
                                    "exitCode": code,
                                    "reason": "Completed" if code == 0 else "Error",
                                    "finishedAt": _now(),
                                }
                            },
                        }
                    ],
                }
            },
        )
        await self._finish_job(
            pod,
            failed=code != 0,
            reason="BackoffLimitExceeded",
            message="Job has reached the specified backoff limit",
        )

    async def _finish_job(self, pod: _Pod, *, failed: bool, reason: str, message: str) -> None:
        key = (pod.namespace, pod.job)
        if key in self._jobs_done:
            return
        self._jobs_done.add(key)
        cond = {
            "type": "Failed" if failed else "Complete",
            "status": "True",
            "lastTransitionTime": _now(),
        }
        if failed:
            cond.update(reason=reason, message=message)
        status = {"active": 0, "conditions": [cond], "failed" if failed else "succeeded": 1}
        await self._patch(JOBS, pod.namespace, pod.job, {"status": status})

    async def _patch_pod(self, pod: _Pod, body: dict[str, Any]) -> None:
        if not pod.deleted:
            await self._patch(PODS, pod.namespace, pod.name, body)

    async def _patch(self, resource: Any, ns: str, name: str, body: dict[str, Any]) -> None:
        resp = await self._k.patch(
            _path(resource, ns, name),
            json=body,
            headers={"Content-Type": "application/merge-patch+json"},
        )
        if resp.status >= 400 and resp.status != 404:
            self.errors.append(f"patch {resource} {ns}/{name}: {resp.status}")

    # -- pods/NAME/log ---------------------------------------------------------------

    async def _serve_log(self, request: Any) -> AsyncIterator[bytes]:
        pod = self._pods.get((request.namespace, request.name))
        if pod is None or pod.deleted:
            raise kmock.KubernetesObjectNotFoundError()
        if not pod.started:
            raise kmock.KubernetesError(
                status=400,
                reason="BadRequest",
                message=f'container in pod "{pod.name}" is waiting to start',
            )
        follow = request.params.get("follow") == "true"
        stamps = request.params.get("timestamps") == "true"
        cut = self.log_cuts.pop(0) if follow and self.log_cuts else None
        since = request.params.get("sinceSeconds")
        cutoff = ""
        if since:
            then = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=int(since))
            cutoff = then.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"
        return _log_stream(pod, follow, stamps, cut, cutoff)


async def _log_stream(
    pod: _Pod, follow: bool, stamps: bool, cut: int | None, cutoff: str
) -> AsyncIterator[bytes]:
    yield b""
    sent = 0
    while True:
        pod.changed.clear()
        while sent < len(pod.lines):
            if cut is not None and sent >= cut:
                return
            ts, line = pod.lines[sent]
            sent += 1
            if ts < cutoff:
                continue
            yield (f"{ts} {line}\n" if stamps else f"{line}\n").encode()
        if not follow or pod.ended.is_set() or pod.deleted:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(pod.changed.wait(), 0.2)


def _terminate(pod: _Pod) -> None:
    _signal(pod, signal.SIGKILL)
    pod.changed.set()


def _signal(pod: _Pod, sig: int) -> None:
    """Signal the pod's process group (its container), if it still runs."""
    if pod.proc is not None and pod.proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pod.proc.pid, sig)


def _path(resource: Any, namespace: str, name: str | None = None) -> str:
    base = "/api/v1" if resource.group == "" else f"/apis/{resource.group}/{resource.version}"
    path = f"{base}/namespaces/{namespace}/{resource.plural}"
    return f"{path}/{name}" if name else path

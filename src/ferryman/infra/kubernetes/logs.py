"""Following the log of an attempt's pod into the sink.

A log stream that breaks while the container runs is reopened; lines already
delivered are skipped by their timestamps, so none repeat and none are lost.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import threading
from typing import Any

from ferryman.infra.kubernetes.api import Cluster, api_error, status_of
from ferryman.infra.kubernetes.watch import JobHandle

log = logging.getLogger(__name__)

#: A log stream silent this long is reopened (lines are de-duplicated).
LOG_READ_TIMEOUT = 300.0


def start_logs(cluster: Cluster, h: JobHandle) -> None:
    """Follow the pod's log into the handle's sink, in a thread (once)."""
    if h.sink is None or h.pod is None or h.log_thread is not None:
        return
    h.log_thread = threading.Thread(
        target=_follow_logs, args=(cluster, h), name=f"ferryman-k8s-log-{h.name}", daemon=True
    )
    h.log_thread.start()


def _follow_logs(cluster: Cluster, h: JobHandle) -> None:
    """Stream the pod's log into the sink until the container ends.

    A log stream that breaks while the container still runs is reopened;
    lines already delivered are skipped by their timestamps. Once the
    container has ended the log is read one last time (from shortly
    before the last line seen), so a stream that broke just as the
    container ended loses nothing.
    """
    failures = 0
    first = True
    while not h.stop_logs.is_set() and not cluster.closed.is_set():
        ended = not first and _container_done(cluster, h)
        first = False
        try:
            kwargs: dict[str, Any] = {}
            since = _since_seconds(h.last_ts) if ended else None
            if since is not None:
                kwargs["since_seconds"] = since
            resp = cluster.core().read_namespaced_pod_log(
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
                _pump(h, resp)
            finally:
                resp.release_conn()
        except Exception as exc:
            status = status_of(exc)
            if status == 404:
                return  # the pod is gone
            failures += 1
            if status != 400:  # 400: "container is waiting to start"
                log.info("log stream of %s broke: %s", h.identifier, api_error(exc))
            cluster.retry_pause(min(failures, 5))
            continue
        if ended:
            return  # that read began after the container ended: it held everything
        if not _container_done(cluster, h):
            cluster.retry_pause(1)  # the stream ended early: reopen it shortly


def _container_done(cluster: Cluster, h: JobHandle) -> bool:
    """Whether the step container has terminated (or the pod is gone)."""
    try:
        resp = cluster.core().read_namespaced_pod(h.pod, h.namespace, _preload_content=False)
    except Exception as exc:
        return status_of(exc) == 404
    pod = json.loads(resp.data)
    if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        return True
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") == h.container and (cs.get("state") or {}).get("terminated"):
            return True
    return False


def _pump(h: JobHandle, resp: Any) -> None:
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
            skip = _deliver(h, raw.decode("utf-8", errors="replace"), skip)
    if buffer:
        _deliver(h, buffer.decode("utf-8", errors="replace"), skip)


def _deliver(h: JobHandle, line: str, skip: int) -> int:
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

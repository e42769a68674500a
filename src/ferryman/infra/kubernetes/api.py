"""The Kubernetes API as the infrastructure uses it: one client, and the few
calls it makes (read, list, watch and delete Jobs and pods), with errors
turned into short, secret-free text. The official client is blocking; it is
imported on first use."""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

from ferryman.infra.kubernetes.config import KubernetesConfig

log = logging.getLogger(__name__)


def api_error(exc: Exception) -> str:
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


def status_of(exc: Exception) -> int | None:
    """The HTTP status of an API error (None for other errors)."""
    from kubernetes.client.exceptions import ApiException

    return exc.status if isinstance(exc, ApiException) else None


def pod_of(pod: dict[str, Any], job: str) -> bool:
    """Whether ``pod`` belongs to the Job named ``job``."""
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return job in (labels.get("job-name"), labels.get("batch.kubernetes.io/job-name"))


class Cluster:
    """A client of one cluster (made from the configuration on first use).

    ``closed`` is set by ``close``: waits and retries end early then."""

    def __init__(self, config: KubernetesConfig) -> None:
        self.config = config
        self.closed = threading.Event()
        self._client: tuple[Any, Any, Any] | None = None
        self._lock = threading.Lock()

    def _api(self) -> tuple[Any, Any, Any]:
        """``(ApiClient, BatchV1Api, CoreV1Api)``, created on first use."""
        from kubernetes import client as k8s

        with self._lock:
            if self._client is None:
                api = self._make_client()
                self._client = (api, k8s.BatchV1Api(api), k8s.CoreV1Api(api))
            return self._client

    def _make_client(self) -> Any:
        # credentials: explicit api_server + token, in-cluster, or a kubeconfig
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

    def batch(self) -> Any:
        """The ``BatchV1Api`` (Jobs)."""
        return self._api()[1]

    def core(self) -> Any:
        """The ``CoreV1Api`` (pods and their logs)."""
        return self._api()[2]

    def delete_job(self, ns: str, name: str, grace: int | None) -> None:
        """Delete the Job, its pods first (a Job already gone is fine); retried."""
        for attempt in range(5):
            try:
                self.batch().delete_namespaced_job(
                    name,
                    ns,
                    propagation_policy="Foreground",
                    grace_period_seconds=grace,
                    _preload_content=False,
                )
                return
            except Exception as exc:
                if status_of(exc) == 404:
                    return
                if attempt == 4:
                    raise RuntimeError(
                        f"could not delete job {ns}/{name}: {api_error(exc)}"
                    ) from None
                log.warning("deleting job %s/%s failed (%s); retrying", ns, name, api_error(exc))
                time.sleep(0.5 * 2**attempt)

    def read_job(self, ns: str, name: str) -> dict[str, Any] | None:
        """The Job as a dict, ``None`` if it does not exist (other errors propagate)."""
        try:
            resp = self.batch().read_namespaced_job(name, ns, _preload_content=False)
        except Exception as exc:
            if status_of(exc) == 404:
                return None
            raise
        data: dict[str, Any] = json.loads(resp.data)
        return data

    def pods(self, ns: str, job: str) -> tuple[list[dict[str, Any]], str | None]:
        """The Job's pods and the list's resourceVersion."""
        resp = self.core().list_namespaced_pod(
            ns, label_selector=f"job-name={job}", _preload_content=False
        )
        data = json.loads(resp.data)
        pods = [p for p in data.get("items") or [] if pod_of(p, job)]
        return pods, (data.get("metadata") or {}).get("resourceVersion")

    def events(
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

    def retry_pause(self, failures: int) -> None:
        """Back off after ``failures`` failures in a row (ends early on ``close``)."""
        delay = min(0.2 * 2**failures, 10.0) * (0.5 + random.random() / 2)
        self.closed.wait(delay)

    def close(self) -> None:
        """Release the HTTP connections (and end retries and waits)."""
        self.closed.set()
        with self._lock:
            if self._client is not None:
                try:
                    self._client[0].close()
                except Exception:  # pragma: no cover - best effort
                    log.debug("closing the kubernetes client failed", exc_info=True)
                self._client = None

"""The ``kubernetes`` infrastructure (SPEC §7): each attempt is a batch/v1 Job.

The Job is built from a base manifest (the configuration's ``job_manifest`` or
a minimal default) + shortcut fields + RFC 6902 JSON-patch customizations
(see ``manifest`` and ``job``). It always has ``backoffLimit: 0``: retries are
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

Modules: ``names`` (valid names and labels), ``manifest`` (base manifests and
JSON patches), ``config`` (settings), ``job`` (the Job of one attempt),
``api`` (the client and the calls made), ``watch`` (an attempt's Job to its
end), ``logs`` (the pod's log into the sink), ``infrastructure``
(``KubernetesInfrastructure``).
"""

from ferryman.infra.kubernetes.config import KubernetesConfig, load_customizations
from ferryman.infra.kubernetes.infrastructure import KubernetesInfrastructure, parse_identifier
from ferryman.infra.kubernetes.manifest import ManifestError

__all__ = [
    "KubernetesConfig",
    "KubernetesInfrastructure",
    "ManifestError",
    "load_customizations",
    "parse_identifier",
]

"""The Kubeflow Pipelines event-handler format.

``{"KfpRunId", "WorkflowName", "NodeName", "EventType", "Message"}`` with
``EventType`` one of the five KFP knows, ``KfpRunId`` shaped like a KFP run id
(a UUID with dashes) and ``WorkflowName`` like an Argo workflow's name
(lower case, ``-``, at most 63 characters), both derived from the run. The node name is the event's
``node`` field (never parsed out of a message). Events without a KFP
equivalent (queued, retrying, skipped, cancelled …) are not sent in this
format.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from ferryman.notify.formats.base import FormatContext

#: The longest Argo workflow name (it is used as a Kubernetes label value).
MAX_WORKFLOW_NAME = 63

KFP_EVENT_TYPES: dict[str, str] = {
    "RunRunning": "WorkflowRunning",
    "RunSucceeded": "WorkflowSucceeded",
    "RunFailed": "WorkflowFailed",
    "NodeSucceeded": "WorkflowNodeSucceeded",
    "NodeFailed": "WorkflowNodeFailed",
}


class KfpFormat:
    """Run and node outcomes in the KFP event-handler shape."""

    name = "kfp"
    content_type = "application/json"
    #: KFP's five fields are fixed: the run id is the reference (the delivery's
    #: ``webhook-id`` header carries the event's id).
    carries_event_id = False

    def accepts(self, event_type: str) -> bool:
        """Only the five event types KFP has."""
        return event_type in KFP_EVENT_TYPES

    def render(self, event: dict[str, Any], ctx: FormatContext) -> dict[str, Any]:
        """The KFP fields (``kfp_run_id``, ``workflow_name``)."""
        node = event.get("node")
        return {
            "KfpRunId": kfp_run_id(event["run_id"]),
            "WorkflowName": workflow_name(event["pipeline"], event["run_id"]),
            "NodeName": node if node is not None else "",
            "EventType": KFP_EVENT_TYPES[event["type"]],
            "Message": event.get("message") or "",
        }


def kfp_run_id(run_id: str) -> str:
    """The run id as KFP writes run ids: a UUID with dashes. Ferryman's ids
    are 32 hex digits in the UUIDv7 layout, so this is the same value, and
    ``"".join(kfp_run_id(x).split("-")) == x`` takes it back."""
    return str(uuid.UUID(hex=run_id))


def workflow_name(pipeline: str, run_id: str) -> str:
    """An Argo workflow name for the run: the pipeline's name in lower case
    with ``-`` for anything but letters and digits, a ``-`` and the run id;
    at most 63 characters (the pipeline part is shortened, the id never)."""
    base = re.sub(r"[^a-z0-9]+", "-", pipeline.lower()).strip("-") or "run"
    base = base[: MAX_WORKFLOW_NAME - len(run_id) - 1].rstrip("-") or "run"
    return f"{base}-{run_id}"

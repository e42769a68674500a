"""The Kubeflow Pipelines event-handler format.

``{"KfpRunId", "WorkflowName", "NodeName", "EventType", "Message"}`` with
``EventType`` one of the five KFP knows. The node name is the event's
``node`` field (never parsed out of a message). Events without a KFP
equivalent (queued, retrying, skipped, cancelled …) are not sent in this
format.
"""

from __future__ import annotations

from typing import Any

from ferryman.notify.formats.base import FormatContext

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
        """The KFP fields; ``WorkflowName`` is ``<pipeline>-<run id>`` like an Argo workflow."""
        node = event.get("node")
        return {
            "KfpRunId": event["run_id"],
            "WorkflowName": f"{event['pipeline']}-{event['run_id']}",
            "NodeName": node if node is not None else "",
            "EventType": KFP_EVENT_TYPES[event["type"]],
            "Message": event.get("message") or "",
        }

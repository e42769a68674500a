"""The KFP event format's ids (issue 12, item 14): ``KfpRunId`` looks like a
KFP run id, ``WorkflowName`` like an Argo workflow's name."""

from __future__ import annotations

import re
import uuid

import pytest

from ferryman.notify.formats.base import FormatContext
from ferryman.notify.formats.kfp import KfpFormat, kfp_run_id, workflow_name
from ferryman.store.tables import new_id

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
ARGO_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def event(pipeline: str, run_id: str) -> dict[str, object]:
    return {"type": "RunFailed", "run_id": run_id, "pipeline": pipeline, "node": None,
            "message": "boom"}  # fmt: skip


def test_kfp_run_id_is_a_uuid_with_dashes_derived_from_the_run_id() -> None:
    run_id = new_id()
    body = KfpFormat().render(event("etl", run_id), FormatContext())
    assert UUID_RE.match(body["KfpRunId"])
    assert body["KfpRunId"].replace("-", "") == run_id  # the same value: deterministic
    assert uuid.UUID(body["KfpRunId"]).version == 7
    assert kfp_run_id(run_id) == kfp_run_id(run_id)


@pytest.mark.parametrize(
    "pipeline",
    ["etl", "Nightly_ETL.v2", "__x__", "a" * 128, "A_b-C.d_e" * 10, "9lives", "x..y"],
)
def test_workflow_name_is_an_argo_name(pipeline: str) -> None:
    run_id = new_id()
    name = workflow_name(pipeline, run_id)
    assert ARGO_NAME.match(name), name
    assert len(name) <= 63 and "_" not in name and name == name.lower()
    assert name.endswith("-" + run_id)  # whole: two runs never share a name
    assert workflow_name(pipeline, run_id) == name
    body = KfpFormat().render(event(pipeline, run_id), FormatContext())
    assert body["WorkflowName"] == name


def test_workflow_name_keeps_what_it_can_of_the_pipeline() -> None:
    run_id = "01a20a8691e07d20a59097987a969932"
    assert workflow_name("Nightly_ETL.v2", run_id) == f"nightly-etl-v2-{run_id}"
    assert workflow_name("__", run_id) == f"run-{run_id}"
    assert workflow_name("a" * 100, run_id) == "a" * 30 + f"-{run_id}"

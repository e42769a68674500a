"""RunOptions and Origin: typed, frozen, and stored as the JSON runs always had."""

from __future__ import annotations

import pydantic
import pytest

from ferryman.api.schemas import RunCreate
from ferryman.domain.options import NO_OPTIONS, Origin, RunOptions


def test_stored_options_hold_only_what_was_given() -> None:
    assert NO_OPTIONS.stored() == {}
    assert RunOptions(timeout=None, infrastructure=None).stored() == {}
    opts = RunOptions(infrastructure="inline", timeout=2, infra_overrides={"a": {"cpu": 1}})
    assert opts.stored() == {
        "infrastructure": "inline",
        "timeout": 2.0,
        "infra_overrides": {"a": {"cpu": 1}},
    }


def test_stored_options_read_back_exactly() -> None:
    raw = {"webhook_url": "https://example.com/hook", "slack_channel": "C1", "timeout": 5.0}
    opts = RunOptions.from_stored(raw)
    assert (opts.webhook_url, opts.slack_channel, opts.slack_thread) == (
        raw["webhook_url"],
        "C1",
        None,
    )
    assert opts.stored() == raw
    assert RunOptions.from_stored(None) is NO_OPTIONS
    assert RunOptions.from_stored({}) is NO_OPTIONS


def test_unknown_stored_keys_are_ignored_but_unknown_options_refused() -> None:
    assert RunOptions.from_stored({"timeout": 1, "from_the_future": True}).stored() == {
        "timeout": 1.0
    }
    with pytest.raises(pydantic.ValidationError):
        RunOptions.model_validate({"timout": 1})


def test_options_are_frozen() -> None:
    with pytest.raises(pydantic.ValidationError):
        RunOptions(timeout=1).timeout = 2  # type: ignore[misc]


def test_overrides_for_a_step() -> None:
    opts = RunOptions(infra_overrides={"train": {"memory": "2Gi"}})
    assert opts.overrides_for("train") == {"memory": "2Gi"}
    assert opts.overrides_for("other") == {}


def test_run_create_options_are_the_options_the_api_always_stored() -> None:
    body = RunCreate.model_validate(
        {
            "params": {"n": 1},
            "webhook_url": "https://example.com/h",
            "slack_channel": "C1",
            "slack_thread": "1.2",
            "timeout": 30,
            "labels": {"a": "b"},
        }
    )
    assert body.options().stored() == {
        "webhook_url": "https://example.com/h",
        "slack_channel": "C1",
        "slack_thread": "1.2",
        "timeout": 30.0,
    }
    assert RunCreate().options().stored() == {}


def test_origin_keeps_today_shapes() -> None:
    assert Origin(kind="api", user="alice").stored() == {"kind": "api", "user": "alice"}
    assert Origin(kind="compat", user=None).stored() == {"kind": "compat", "user": None}
    event = {
        "kind": "event",
        "run_id": "r1",
        "namespace": "default",
        "pipeline": "extract",
        "state": "succeeded",
        "event_id": "e1",
        "depth": 2,
        "trigger": 0,
    }
    origin = Origin.from_stored(event)
    assert origin is not None and origin.depth == 2
    assert origin.stored() == event
    assert Origin.from_stored(None) is None
    assert Origin.from_stored({}) is None

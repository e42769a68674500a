"""The contract every web-API plugin passes: the built-ins and every plugin
registered in the ``ferryman.plugins`` entry-point group, against the fake
remote service (a real HTTP server on loopback, ``tests/remote_fake.py``).

A plugin declares an id, task types, defaults among them and a config model;
``create`` returns JSON-serialisable meta (the same for the same idempotency
key), ``get`` fetches, ``status`` maps without the network and the same way
every time, ``delete`` cancels and is fine for a deleted or unknown resource;
system failures (5xx, 429 with Retry-After, an unreachable service) raise
``SystemFailure`` and refusals ``UserFailure``. ``SyncPlugin.do`` answers
JSON-serialisable output. A new plugin passes the suite by adding its case to
``CASES``: how to configure it against the fake for a job of a given outcome.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from tests.remote_fake import RemoteServer

from ferryman.plugins.base import (
    AsyncPlugin,
    PhaseState,
    Plugin,
    SyncPlugin,
    SystemFailure,
    TaskContext,
    UserFailure,
)
from ferryman.plugins.registry import PluginRegistry

# plugin id -> (remote base URL, job body) -> the task config for it
Case = Callable[[str, dict[str, Any]], dict[str, Any]]


def _http_job(url: str, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "create": {"url": url + "/jobs", "body": body},
        "status_url": url + "/jobs/{id}",
        "cancel_url": url + "/jobs/{id}",
    }


def _http_call(url: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"url": url + "/call", "body": body, "output_pointer": "/echo"}


CASES: dict[str, Case] = {"http_job": _http_job, "http_call": _http_call}
PLUGINS = sorted(PluginRegistry().load())


@pytest.fixture
def remote() -> Iterator[RemoteServer]:
    srv = RemoteServer()
    yield srv
    srv.close()


def ctx_for(cls: type[Plugin], config: dict[str, Any], key: str = "k-1") -> TaskContext:
    return TaskContext(
        run_id="r1", step="s", attempt=1, namespace="default", pipeline="p",
        task_type=sorted(cls.task_types)[0], idempotency_key=key,
        config=cls.config_model.model_validate(config),
    )  # fmt: skip


def case(plugin_id: str) -> Case:
    if plugin_id not in CASES:
        pytest.fail(f"plugin {plugin_id!r} has no case in tests/contract/test_plugins.py CASES")
    return CASES[plugin_id]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.mark.parametrize("plugin_id", PLUGINS)
def test_declarations(plugin_id: str) -> None:
    cls = PluginRegistry().plugin_class(plugin_id)
    assert cls.id == plugin_id
    assert cls.task_types and all(isinstance(t, str) and t for t in cls.task_types)
    assert cls.default_for <= cls.task_types
    assert issubclass(cls, AsyncPlugin | SyncPlugin)
    # the config model names its fields and refuses unknown ones
    with pytest.raises(ValueError):
        cls.config_model.model_validate({"surely_not_a_field": 1})


@pytest.mark.parametrize("plugin_id", PLUGINS)
def test_a_task_succeeds_with_json_outputs(plugin_id: str, remote: RemoteServer) -> None:
    cls = PluginRegistry().plugin_class(plugin_id)
    ctx = ctx_for(cls, case(plugin_id)(remote.url, {"duration": 0.2, "outputs": {"n": 1}}))
    plugin = cls()

    async def go() -> Any:
        try:
            if isinstance(plugin, SyncPlugin):
                return await plugin.do(ctx)
            assert isinstance(plugin, AsyncPlugin)
            meta, resource = await plugin.create(ctx)
            json.dumps(meta)  # stored durably: must be JSON
            again, _ = await plugin.create(ctx)  # same key: the same resource
            assert again == meta
            deadline = time.monotonic() + 10
            while True:
                if resource is None:
                    resource = await plugin.get(meta, ctx)
                before = len(remote.fake.gets)
                phase = plugin.status(ctx, resource)
                assert plugin.status(ctx, resource) == phase  # pure
                assert len(remote.fake.gets) == before  # no network
                if phase.terminal:
                    assert phase.state == PhaseState.SUCCEEDED, phase
                    return phase.outputs
                assert time.monotonic() < deadline
                resource = None
                await asyncio.sleep(0.05)
        finally:
            await plugin.close()

    out = run(go())
    json.dumps(out)
    assert out is not None


@pytest.mark.parametrize("plugin_id", [p for p in PLUGINS if p in CASES])
def test_failures_are_told_apart(plugin_id: str, remote: RemoteServer) -> None:
    cls = PluginRegistry().plugin_class(plugin_id)
    plugin = cls()

    async def first_call(ctx: TaskContext) -> Any:
        if isinstance(plugin, SyncPlugin):
            return await plugin.do(ctx)
        assert isinstance(plugin, AsyncPlugin)
        return await plugin.create(ctx)

    async def go() -> None:
        try:
            cfg = case(plugin_id)(remote.url, {"duration": 0.1})
            remote.fake.fail_next = 1
            with pytest.raises(SystemFailure):
                await first_call(ctx_for(cls, cfg))
            remote.fake.throttle_next, remote.fake.retry_after = 1, 7
            with pytest.raises(SystemFailure) as exc:
                await first_call(ctx_for(cls, cfg))
            assert exc.value.retry_after == 7
            down = case(plugin_id)("http://127.0.0.1:9", {"duration": 0.1})
            with pytest.raises(SystemFailure):
                await first_call(ctx_for(cls, down))
            if isinstance(plugin, AsyncPlugin):
                bad = case(plugin_id)(remote.url, {"duration": "long"})
                with pytest.raises(UserFailure, match="duration must be a number"):
                    await first_call(ctx_for(cls, bad))
        finally:
            await plugin.close()

    run(go())


@pytest.mark.parametrize("plugin_id", [p for p in PLUGINS if p in CASES])
def test_async_plugins_fail_delete_and_vanish_properly(
    plugin_id: str, remote: RemoteServer
) -> None:
    cls = PluginRegistry().plugin_class(plugin_id)
    if not issubclass(cls, AsyncPlugin):
        pytest.skip("a sync plugin has no resource")
    plugin = cls()
    mk = case(plugin_id)

    async def until_terminal(ctx: TaskContext, meta: Any) -> Any:
        deadline = time.monotonic() + 10
        while True:
            phase = plugin.status(ctx, await plugin.get(meta, ctx))
            if phase.terminal:
                return phase
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)

    async def go() -> None:
        try:
            ctx = ctx_for(cls, mk(remote.url, {"duration": 0.1, "outcome": "failed",
                                               "message": "out of memory"}), "k-f")  # fmt: skip
            meta, _ = await plugin.create(ctx)
            phase = await until_terminal(ctx, meta)
            assert phase.state == PhaseState.FAILED and "out of memory" in phase.message

            ctx = ctx_for(cls, mk(remote.url, {"duration": 30}), "k-d")
            meta, _ = await plugin.create(ctx)
            await plugin.delete(meta, "cancelled", ctx)
            await plugin.delete(meta, "cancelled", ctx)  # already deleted: fine
            assert len(remote.fake.deletes) == 2
            assert all(j.cancelled for j in remote.fake.jobs.values() if j.key == "k-d")

            ctx = ctx_for(cls, mk(remote.url, {"duration": 0.1, "outcome": "vanish"}), "k-v")
            meta, _ = await plugin.create(ctx)
            await asyncio.sleep(0.2)
            with pytest.raises(UserFailure, match="vanished"):
                await plugin.get(meta, ctx)
            await plugin.delete(meta, "cleanup", ctx)  # unknown to the remote: fine
        finally:
            await plugin.close()

    run(go())

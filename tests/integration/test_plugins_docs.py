"""The examples of docs/plugins.md: the Python pipeline and the YAML file
compile to task steps, and the example plugin registers and runs."""

from __future__ import annotations

import asyncio
import re
import types
from pathlib import Path

import yaml

from ferryman.domain.spec import TaskStep
from ferryman.dsl.yaml_loader import spec_from_mapping
from ferryman.plugins.base import AsyncPlugin, PhaseState, TaskContext
from ferryman.plugins.registry import BUILTIN, PluginRegistry, Registration

DOC = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.M | re.S)


def blocks(lang: str) -> list[str]:
    return [b for k, b in FENCE.findall(DOC.read_text(encoding="utf-8")) if k == lang]


def load(code: str, name: str) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__file__ = str(DOC)
    exec(compile(code, str(DOC), "exec"), mod.__dict__)
    return mod


def test_the_python_pipeline_compiles() -> None:
    mod = load(blocks("python")[0], "docs_plugins_pipeline")
    spec = mod.nightly.spec()
    step = spec.step("export")
    assert isinstance(step, TaskStep)
    assert step.type == "http_job" and step.secrets == ["BATCH_TOKEN"]
    assert step.config["create"]["body"] == {
        "table": "{{ params.table }}",
        "region": "{{ inputs.pick_region }}",
    }


def test_the_yaml_pipeline_compiles(tmp_path: Path) -> None:
    (tmp_path / "regions.py").write_text("def pick_region():\n    return 'eu'\n")
    data = yaml.safe_load(blocks("yaml")[0])
    data["steps"][0]["function"] = f"{tmp_path}/regions.py:pick_region"
    spec = spec_from_mapping(data)
    step = spec.step("export")
    assert isinstance(step, TaskStep)
    assert step.depends_on == ["pick_region"]


def test_the_example_plugin_registers_and_runs() -> None:
    mod = load(blocks("python")[1], "docs_plugins_plugin")
    import sys

    sys.modules["docs_plugins_plugin"] = mod
    regs = [Registration(k, v, "built-in") for k, v in BUILTIN.items()]
    regs.append(Registration("warehouse", "docs_plugins_plugin:WarehousePlugin", "docs"))
    registry = PluginRegistry(regs)
    cls = registry.for_task("warehouse_query")
    assert issubclass(cls, AsyncPlugin)
    plugin = cls()
    ctx = TaskContext(
        run_id="r", step="s", attempt=1, namespace="default", pipeline="p",
        task_type="warehouse_query", idempotency_key="k",
        config=cls.config_model.model_validate({"query": "select 1"}),
    )  # fmt: skip

    async def go() -> PhaseState:
        meta, _ = await plugin.create(ctx)
        return plugin.status(ctx, await plugin.get(meta, ctx)).state

    assert asyncio.run(go()) == PhaseState.SUCCEEDED
    sys.modules.pop("docs_plugins_plugin", None)

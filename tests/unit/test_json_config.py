"""``json_config`` parameters: declared in Python and YAML, checked against
their JSON Schema with every problem's path; a bad schema is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ferryman.domain.params import ParamsInvalid, validate_params
from ferryman.domain.spec import ParamSpec
from ferryman.dsl.loader import load_pipeline

BOT = Path(__file__).parent.parent / "pipelines" / "bot.py"


def test_python_declaration_compiles_to_json_config() -> None:
    spec = load_pipeline(f"{BOT}:bot")
    (p,) = spec.params
    assert p.type == "json_config" and p.json_schema is not None
    assert validate_params(spec, {"config": {"action": "post_summary", "limit": 3}}) == {
        "config": {"action": "post_summary", "limit": 3}
    }


@pytest.mark.parametrize(
    ("config", "says"),
    [
        ({"action": "frobnicate"}, "$.action: 'frobnicate' is not one of"),
        ({}, "'action' is a required property"),
        ({"action": "post_summary", "limit": 0}, "$.limit: 0 is less than the minimum of 1"),
        ({"action": "post_summary", "extra": 1}, "Additional properties are not allowed"),
        ("post_summary", "is not of type 'object'"),
    ],
)
def test_a_config_breaking_its_schema_is_refused(config: Any, says: str) -> None:
    spec = load_pipeline(f"{BOT}:bot")
    with pytest.raises(ParamsInvalid) as info:
        validate_params(spec, {"config": config})
    (err,) = info.value.errors
    assert err.path == "config" and says in err.reason


def test_yaml_declaration(tmp_path: Path) -> None:
    f = tmp_path / "bot.yaml"
    f.write_text(
        "name: ybot\n"
        "params:\n"
        "  config:\n"
        "    type: json_config\n"
        "    schema: {type: object, properties: {action: {enum: [a, b]}}}\n"
        "steps:\n"
        f"  - {{name: act, function: '{BOT}:act', inputs: {{config: {{$param: config}}}}}}\n"
    )
    spec = load_pipeline(str(f))
    assert spec.params[0].type == "json_config"
    with pytest.raises(ParamsInvalid, match="not one of"):
        validate_params(spec, {"config": {"action": "c"}})


def test_schema_is_required_and_must_be_valid() -> None:
    with pytest.raises(ValueError, match="needs a 'schema'"):
        ParamSpec(name="c", type="json_config")
    with pytest.raises(ValueError, match="invalid JSON Schema"):
        ParamSpec(name="c", type="json_config", json_schema={"type": "nonsense"})
    with pytest.raises(ValueError, match="only a json_config"):
        ParamSpec(name="c", type="object", json_schema={"type": "object"})


def test_params_without_a_schema_hash_as_before() -> None:
    assert "json_schema" not in ParamSpec(name="n", type="integer").model_dump_json()

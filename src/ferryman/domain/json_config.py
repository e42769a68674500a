"""``json_config`` parameters: a JSON value (a bot's configuration file,
say) checked against the JSON Schema its pipeline declares.

The check runs wherever parameters are validated: when a run is started and
when a schedule is saved, so a configuration with an unknown action is
refused with the path and the reason, never run to a silent exit 0.
``jsonschema`` is imported on first use (a step's process never pays for it).
"""

from __future__ import annotations

from typing import Any


def check_schema(name: str, schema: dict[str, Any]) -> None:
    """``ValueError`` if ``schema`` is not a valid JSON Schema."""
    from jsonschema import SchemaError
    from jsonschema.validators import validator_for

    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        raise ValueError(f"parameter {name!r}: invalid JSON Schema: {exc.message}") from None


def config_problems(schema: dict[str, Any], value: Any) -> list[str]:
    """Every way ``value`` breaks ``schema``, as ``path: reason`` (``$`` is the root)."""
    from jsonschema.validators import validator_for

    validator = validator_for(schema)(schema)
    out = []
    for error in sorted(validator.iter_errors(value), key=lambda e: list(map(str, e.path))):
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.path)
        out.append(f"${path}: {error.message}")
    return out


def json_config_checker(schema: dict[str, Any]) -> Any:
    """A pydantic after-validator that refuses values breaking ``schema``."""

    def check(value: Any) -> Any:
        problems = config_problems(schema, value)
        if problems:
            raise ValueError("does not match its schema: " + "; ".join(problems[:10]))
        return value

    return check

"""Parameter defaults checked against their own types and constraints when a
pipeline compiles, by the Python DSL and the YAML loader alike (same paths,
same messages): a default that no run could be validated with is a mistake
in the pipeline, not in the run that happens to use it."""

from __future__ import annotations

from pydantic import ValidationError

from ferryman.domain.spec import PipelineSpec


def default_problems(spec: PipelineSpec) -> list[tuple[str, str]]:
    """``(path, message)`` for every default that fails its parameter's type,
    choices or constraints, e.g. ``("params.n.default", "Input should be a
    valid integer, …")``. ``None`` defaults are left out: they make the
    parameter nullable."""
    from ferryman.domain.params import build_model

    given = {p.name: p.default for p in spec.params if not p.required and p.default is not None}
    if not given:
        return []
    try:
        model = build_model(spec)
    except TypeError:  # an unhashable spec cannot be cached; the run will say so
        return []
    try:
        model.model_validate(given)
    except ValidationError as exc:
        problems = []
        for e in exc.errors(include_url=False):
            loc = e["loc"]
            if loc and loc[0] in given:
                problems.append((f"params.{loc[0]}.default{_rest(loc[1:])}", e["msg"]))
        return problems
    return []


def _rest(loc: tuple[int | str, ...]) -> str:
    """The rest of a location inside a default: ``[1]``, ``.key`` …"""
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)

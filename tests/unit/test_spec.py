"""PipelineSpec: graph validation, version hash, binding expressions (SPEC §1)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from ferryman.domain.spec import (
    ContainerStep,
    FunctionRef,
    ParamSpec,
    PipelineSpec,
    PythonStep,
    StepSpec,
    ValidatorSpec,
    iter_refs,
    literal,
    parse_step,
    resolve,
    topological_order,
)

FN = {"module": "pkg.mod", "qualname": "f"}


def step(name: str, *deps: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "function": FN, "depends_on": list(deps), **extra}


def make(steps: list[dict[str, Any]], **extra: Any) -> PipelineSpec:
    return PipelineSpec.model_validate({"name": "p", "steps": steps, **extra})


def invalid(steps: list[dict[str, Any]], **extra: Any) -> str:
    with pytest.raises(ValidationError) as exc:
        make(steps, **extra)
    return str(exc.value)


# --------------------------------------------------------------------------- valid specs


def test_minimal_pipeline() -> None:
    spec = make([step("a")])
    assert spec.infrastructure == "process"
    assert spec.step("a").function == FunctionRef(module="pkg.mod", qualname="f")
    with pytest.raises(KeyError):
        spec.step("nope")


def test_spec_is_frozen_and_forbids_extra_fields() -> None:
    spec = make([step("a")])
    with pytest.raises(ValidationError):
        spec.name = "q"  # type: ignore[misc]
    assert "extra" in invalid([step("a")], colour="red").lower()
    with pytest.raises(ValidationError):
        parse_step({**step("a"), "bogus": 1})


def test_round_trips_through_json() -> None:
    spec = make(
        [step("a", inputs={"x": {"$param": "n"}}), step("b", "a", inputs={"y": {"$step": "a"}})],
        params=[{"name": "n", "type": "integer", "required": False, "default": 3}],
        validators=[{"kind": "language", "fields": ["n"]}],
        labels={"team": "data"},
    )
    again = PipelineSpec.model_validate_json(spec.model_dump_json())
    assert again == spec
    assert again.version == spec.version


# --------------------------------------------------------------------------- invalid graphs


def test_duplicate_step_names() -> None:
    assert "step name 'a' is used twice" in invalid([step("a"), step("a")])


def test_unknown_dependency() -> None:
    assert "step 'b' depends on unknown step 'zzz'" in invalid([step("a"), step("b", "zzz")])


def test_self_dependency() -> None:
    assert "step 'a' depends on itself" in invalid([step("a", "a")])


def test_two_node_cycle() -> None:
    assert "dependency cycle" in invalid([step("a", "b"), step("b", "a")])


def test_three_node_cycle() -> None:
    msg = invalid([step("a", "c"), step("b", "a"), step("c", "b"), step("d")])
    assert "pipeline 'p' has a dependency cycle" in msg


def test_cycle_downstream_of_a_valid_root() -> None:
    assert "dependency cycle" in invalid([step("root"), step("x", "root", "y"), step("y", "x")])


def test_step_reference_without_depends_on() -> None:
    msg = invalid([step("a"), step("b", inputs={"x": {"$step": "a"}})])
    assert "step 'b' uses the output of 'a' without depending on it" in msg


def test_nested_step_reference_without_depends_on() -> None:
    msg = invalid([step("a"), step("b", inputs={"xs": [1, {"k": [{"$step": "a"}]}]})])
    assert "uses the output of 'a'" in msg


def test_unknown_param_reference() -> None:
    msg = invalid([step("a", inputs={"x": {"$param": "nope"}})], params=[{"name": "n"}])
    assert "step 'a' uses unknown parameter 'nope'" in msg


def test_validator_naming_unknown_param() -> None:
    msg = invalid(
        [step("a")],
        params=[{"name": "lang"}],
        validators=[{"kind": "language", "fields": ["lang", "langs"]}],
    )
    assert "validator 'language' names unknown parameter 'langs'" in msg


def test_duplicate_param_names() -> None:
    assert "a parameter name is used twice" in invalid(
        [step("a")], params=[{"name": "n"}, {"name": "n"}]
    )


def test_all_graph_errors_are_reported_together() -> None:
    msg = invalid(
        [
            step("a", "ghost"),
            step("a"),
            step("b", "b", inputs={"x": {"$param": "nope"}, "y": {"$step": "a"}}),
        ]
    )
    for part in (
        "depends on unknown step 'ghost'",
        "step name 'a' is used twice",
        "step 'b' depends on itself",
        "unknown parameter 'nope'",
        "uses the output of 'a' without depending on it",
    ):
        assert part in msg


def test_empty_steps() -> None:
    assert "pipeline 'p' has no steps" in invalid([])


def test_steps_are_required() -> None:
    with pytest.raises(ValidationError):
        PipelineSpec.model_validate({"name": "p"})


@pytest.mark.parametrize(
    "name", ["", "-lead", "_lead", ".lead", "has space", "semi;colon", "a/b", "é", "x" * 129]
)
def test_bad_pipeline_and_step_names(name: str) -> None:
    with pytest.raises(ValidationError, match="invalid pipeline name"):
        PipelineSpec.model_validate({"name": name, "steps": [step("a")]})
    with pytest.raises(ValidationError, match="invalid step name"):
        make([step(name)])


@pytest.mark.parametrize("name", ["a", "A1", "0start", "x.y-z_w", "x" * 128])
def test_good_names(name: str) -> None:
    PipelineSpec.model_validate({"name": name, "steps": [step(name)]})


@pytest.mark.parametrize("name", ["1abc", "has-dash", "a.b", "", "with space"])
def test_bad_param_names(name: str) -> None:
    with pytest.raises(ValidationError, match="invalid parameter name"):
        ParamSpec(name=name)


def test_python_step_needs_a_function_and_container_an_image() -> None:
    with pytest.raises(ValidationError, match="needs a function"):
        PythonStep(name="a")
    with pytest.raises(ValidationError, match="needs an image"):
        ContainerStep(name="a", kind="container")
    with pytest.raises(ValidationError, match="module or a file"):
        FunctionRef(qualname="f")


@pytest.mark.parametrize(
    "extra",
    [{"retries": -1}, {"retries": 101}, {"timeout": 0}, {"retry_jitter": 1.5}],
)
def test_step_option_bounds(extra: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        parse_step({**step("a"), **extra})


# --------------------------------------------------------------------------- version


def _big(**over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "p",
        "description": "d",
        "params": [
            {"name": "n", "type": "integer", "required": False, "default": 3},
            {"name": "lang", "type": "string"},
        ],
        "validators": [{"kind": "language", "fields": ["lang"], "options": {}}],
        "steps": [
            step("a", inputs={"n": {"$param": "n"}, "k": "v"}, env={"A": "1", "B": "2"}),
            step("b", "a", inputs={"x": {"$step": "a"}}, retries=2),
        ],
        "labels": {"team": "data", "tier": "gold"},
    }
    data.update(over)
    return data


def test_version_is_a_short_hex_hash() -> None:
    v = PipelineSpec.model_validate(_big()).version
    assert len(v) == 16
    int(v, 16)


def test_version_is_stable_across_instances() -> None:
    assert (
        PipelineSpec.model_validate(_big()).version == PipelineSpec.model_validate(_big()).version
    )


def _reverse_dicts(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _reverse_dicts(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reverse_dicts(v) for v in value]
    return value


def test_version_is_stable_across_dict_ordering() -> None:
    a = PipelineSpec.model_validate(_big())
    b = PipelineSpec.model_validate(_reverse_dicts(_big()))
    assert list(b.labels) == ["tier", "team"]  # the ordering really differs
    assert list(b.steps[0].inputs) == ["k", "n"]
    assert a.version == b.version
    assert a.canonical_json() == b.canonical_json()


def test_canonical_json_is_compact_sorted_json() -> None:
    spec = PipelineSpec.model_validate(_big())
    text = spec.canonical_json()
    # the dump, plus the fields the old flat step model had as null (hash compatibility)
    expected = spec.model_dump(mode="json")
    for s in expected["steps"]:
        s.update({"image": None, "command": None, "args": None})
    assert json.loads(text) == expected
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))


def _with_step(i: int, **change: Any) -> dict[str, Any]:
    d = _big()
    d["steps"] = [dict(s) for s in d["steps"]]
    d["steps"][i].update(change)
    return d


CHANGES: dict[str, dict[str, Any]] = {
    "name": _big(name="q"),
    "description": _big(description="other"),
    "param default": _big(
        params=[
            {"name": "n", "type": "integer", "required": False, "default": 4},
            {"name": "lang", "type": "string"},
        ]
    ),
    "param type": _big(
        params=[
            {"name": "n", "type": "number", "required": False, "default": 3},
            {"name": "lang", "type": "string"},
        ]
    ),
    "validator options": _big(
        validators=[{"kind": "language", "fields": ["lang"], "options": {"allowed": ["en"]}}]
    ),
    "labels": _big(labels={"team": "data", "tier": "silver"}),
    "infrastructure": _big(infrastructure="docker"),
    "timeout": _big(timeout=60),
    "step input": _with_step(0, inputs={"n": {"$param": "n"}, "k": "w"}),
    "step env": _with_step(0, env={"A": "1", "B": None}),
    "step retries": _with_step(1, retries=3),
    "step timeout": _with_step(1, timeout=1.5),
    "step function": _with_step(1, function={"module": "pkg.mod", "qualname": "g"}),
    "step infrastructure": _with_step(1, infrastructure="kubernetes"),
    "extra step": {**_big(), "steps": [*_big()["steps"], step("c", "b")]},
}


@pytest.mark.parametrize("what", list(CHANGES))
def test_version_changes_when_anything_changes(what: str) -> None:
    base = PipelineSpec.model_validate(_big())
    changed = PipelineSpec.model_validate(CHANGES[what])
    assert changed != base
    assert changed.version != base.version


def test_all_versions_are_distinct() -> None:
    versions = {PipelineSpec.model_validate(d).version for d in CHANGES.values()}
    assert len(versions) == len(CHANGES)


# --------------------------------------------------------------------------- topology


def _steps(edges: dict[str, list[str]]) -> list[StepSpec]:
    return [parse_step(step(n, *deps)) for n, deps in edges.items()]


def _assert_topological(order: list[str], edges: dict[str, list[str]]) -> None:
    assert sorted(order) == sorted(edges)
    pos = {n: i for i, n in enumerate(order)}
    for n, deps in edges.items():
        for d in deps:
            assert pos[d] < pos[n], f"{d} must come before {n}"


def test_topological_order_of_a_diamond() -> None:
    edges = {"d": ["b", "c"], "b": ["a"], "c": ["a"], "a": []}
    order = topological_order(_steps(edges))
    _assert_topological(order, edges)
    assert order[0] == "a"
    assert order[-1] == "d"


def test_topological_order_is_stable_for_independent_steps() -> None:
    edges = {"z": [], "y": [], "x": []}
    assert topological_order(_steps(edges)) == ["z", "y", "x"]


def test_topological_order_ignores_duplicate_edges() -> None:
    edges = {"a": [], "b": ["a", "a"]}
    assert topological_order(_steps(edges)) == ["a", "b"]


def test_topological_order_is_short_on_cycles() -> None:
    order = topological_order(_steps({"a": [], "b": ["c"], "c": ["b"]}))
    assert order == ["a"]


@settings(database=None, max_examples=50)
@given(st.integers(min_value=1, max_value=12).flatmap(lambda n: st.tuples(st.just(n), st.data())))
def test_topological_order_of_random_dags(arg: tuple[int, st.DataObject]) -> None:
    n, data = arg
    names = [f"s{i}" for i in range(n)]
    edges = {
        name: data.draw(st.lists(st.sampled_from(names[:i]), unique=True) if i else st.just([]))
        for i, name in enumerate(names)
    }
    shuffled = data.draw(st.permutations(names))
    spec = make([step(name, *edges[name]) for name in shuffled])
    _assert_topological(topological_order(spec.steps), edges)


def test_downstream() -> None:
    spec = make([step("a"), step("b", "a"), step("c", "a"), step("d", "b", "c"), step("e")])
    assert spec.downstream() == {"a": ["b", "c"], "b": ["d"], "c": ["d"], "d": [], "e": []}


# --------------------------------------------------------------------------- binding expressions


def test_iter_refs_finds_nested_references() -> None:
    expr = {
        "x": {"$param": "n"},
        "ys": [{"$step": "a"}, {"$step": "b"}, 3, "s"],
        "deep": {"k": [{"m": {"$param": "lang"}}]},
    }
    assert sorted(iter_refs(expr)) == [
        ("$param", "lang"),
        ("$param", "n"),
        ("$step", "a"),
        ("$step", "b"),
    ]


def test_iter_refs_skips_escaped_values_and_multi_key_dicts() -> None:
    assert iter_refs({"$value": {"$step": "a"}}) == []
    assert iter_refs({"$value": [{"$param": "n"}]}) == []
    # a dict with more keys is an ordinary dict whose values are walked
    assert iter_refs({"$step": "a", "other": {"$param": "n"}}) == [("$param", "n")]
    assert iter_refs([1, "two", None, 3.0, True]) == []


def test_resolve_replaces_references() -> None:
    expr = {
        "x": {"$param": "n"},
        "ys": [{"$step": "a"}, {"$step": "b"}],
        "lit": {"$value": {"$step": "a"}},
        "missing": {"$param": "absent"},
        "plain": [1, {"k": "v"}],
    }
    out = resolve(expr, {"n": 5}, {"a": [1, 2], "b": {"r": 1}})
    assert out == {
        "x": 5,
        "ys": [[1, 2], {"r": 1}],
        "lit": {"$step": "a"},
        "missing": None,
        "plain": [1, {"k": "v"}],
    }


def test_resolve_fails_on_a_missing_output() -> None:
    with pytest.raises(KeyError):
        resolve({"$step": "a"}, {}, {})


def test_literal_keeps_reference_lookalikes_literal() -> None:
    value = {"a": {"$step": "x"}, "b": [{"$param": "y"}], "c": {"$value": 1}, "d": {"k": 1}}
    encoded = literal(value)
    assert encoded == {
        "a": {"$value": {"$step": "x"}},
        "b": [{"$value": {"$param": "y"}}],
        "c": {"$value": {"$value": 1}},
        "d": {"k": 1},
    }
    assert iter_refs(encoded) == []
    assert resolve(encoded, {"y": "P"}, {"x": "OUT"}) == value


def test_literal_turns_tuples_into_lists() -> None:
    assert literal((1, (2, 3))) == [1, [2, 3]]


def test_literal_in_a_pipeline_needs_no_dependency() -> None:
    spec = make([step("a"), step("b", inputs={"cfg": literal({"$step": "a"})})])
    assert spec.step("b").depends_on == []
    assert resolve(spec.step("b").inputs, {}, {}) == {"cfg": {"$step": "a"}}


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["$param", "$step", "$value", "a", "b", "$other"]),
            children,
            max_size=3,
        )
    ),
    max_leaves=20,
)


@settings(database=None)
@given(json_values)
def test_literal_round_trips_any_json_value(value: Any) -> None:
    encoded = literal(value)
    assert iter_refs(encoded) == []
    assert resolve(encoded, {"a": 1}, {"a": 2}) == value
    # and the encoding itself is JSON
    assert json.loads(json.dumps(encoded)) == encoded


@settings(database=None)
@given(json_values)
def test_resolve_with_no_refs_is_identity(value: Any) -> None:
    if iter_refs(value):
        return
    if json.dumps(value).count('"$value"'):
        return  # an escape changes the value, by design
    assert resolve(value, {}, {}) == value


def test_validator_spec_defaults() -> None:
    v = ValidatorSpec(kind="language")
    assert v.fields == []
    assert v.options == {}


def test_duplicate_dependency_is_rejected_or_collapsed() -> None:
    try:
        spec = make([step("a"), step("b", "a", "a")])
    except ValidationError:
        return
    assert spec.downstream() == {"a": ["b"], "b": []}

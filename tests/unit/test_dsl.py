"""The ``@step``/``@pipeline`` Python DSL (SPEC §1): static DAGs, typed params, options."""

from __future__ import annotations

import itertools
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ferryman.domain.params import ParamsInvalid, json_schema, validate_params
from ferryman.domain.spec import FunctionRef, PipelineSpec, ValidatorSpec
from ferryman.dsl.decorators import USER_MODULE_PREFIX, DSLError, Pipeline, Step, pipeline, step
from ferryman.dsl.loader import PipelineNotFound, load_pipeline, load_python_file

HEADER = """\
from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal, Optional

from ferryman import Param, language_code, pipeline, required_together, step


@step
def src(n: int = 0) -> list[int]:
    return list(range(n))


@step
def work(x: Any = None, i: int = 0) -> Any:
    return x


@step
def merge(parts: list[Any]) -> Any:
    return parts

"""


class Files:
    """Writes pipeline files under ``tmp_path`` and loads them."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._n = itertools.count()

    def write(self, body: str, *, header: bool = True, name: str | None = None) -> Path:
        path = self.directory / (name or f"pipes_{next(self._n)}.py")
        path.write_text((HEADER if header else "") + textwrap.dedent(body))
        return path

    def load(self, body: str, attr: str = "", **kw: Any) -> PipelineSpec:
        path = self.write(body, **kw)
        return load_pipeline(f"{path}:{attr}" if attr else str(path))

    def namespace(self, body: str, **kw: Any) -> dict[str, Any]:
        return load_python_file(self.write(body, **kw))


@pytest.fixture
def files(tmp_path: Path) -> Iterator[Files]:
    modules = set(sys.modules)
    path = list(sys.path)
    yield Files(tmp_path)
    for name in set(sys.modules) - modules:
        if name.startswith(USER_MODULE_PREFIX):
            del sys.modules[name]
    sys.path[:] = path


def deps(spec: PipelineSpec) -> dict[str, list[str]]:
    return {s.name: s.depends_on for s in spec.steps}


def inputs(spec: PipelineSpec) -> dict[str, dict[str, Any]]:
    return {s.name: s.inputs for s in spec.steps}


def param(spec: PipelineSpec, name: str) -> dict[str, Any]:
    (p,) = [p for p in spec.params if p.name == name]
    return p.model_dump(exclude_defaults=True)


# --------------------------------------------------------------------------- DAG shape


def test_chain(files: Files) -> None:
    spec = files.load(
        """
        @pipeline
        def chain(n: int = 3):
            a = src(n)
            b = work(a)
            work(b, i=1)
        """
    )
    assert spec.name == "chain"
    assert [s.name for s in spec.steps] == ["src", "work", "work-2"]
    assert deps(spec) == {"src": [], "work": ["src"], "work-2": ["work"]}
    assert inputs(spec) == {
        "src": {"n": {"$param": "n"}},
        "work": {"x": {"$step": "src"}},
        "work-2": {"x": {"$step": "work"}, "i": 1},
    }
    assert spec.downstream() == {"src": ["work"], "work": ["work-2"], "work-2": []}


def test_step_function_reference_points_at_the_file(files: Files) -> None:
    path = files.write(
        """
        @pipeline
        def p():
            src()
        """
    )
    spec = load_pipeline(str(path))
    assert spec.step("src").function == FunctionRef(file=str(path.resolve()), qualname="src")
    assert spec.step("src").kind == "python"


def test_fan_out_in_a_loop(files: Files) -> None:
    spec = files.load(
        """
        @pipeline
        def fan():
            xs = src(10)
            for i in range(3):
                work(xs, i=i)
        """
    )
    assert [s.name for s in spec.steps] == ["src", "work", "work-2", "work-3"]
    for name in ("work", "work-2", "work-3"):
        assert spec.step(name).depends_on == ["src"]
    assert [spec.step(n).inputs["i"] for n in ("work", "work-2", "work-3")] == [0, 1, 2]
    assert spec.downstream()["src"] == ["work", "work-2", "work-3"]


def test_fan_in_of_a_list_of_outputs(files: Files) -> None:
    spec = files.load(
        """
        @pipeline
        def fan():
            xs = src(10)
            merge([work(xs, i=i) for i in range(3)])
        """
    )
    m = spec.step("merge")
    assert m.inputs == {"parts": [{"$step": "work"}, {"$step": "work-2"}, {"$step": "work-3"}]}
    assert m.depends_on == ["work", "work-2", "work-3"]
    order = ["src", "work", "work-3", "merge"]
    assert [s.name for s in spec.steps if s.name in order] == order


def test_fan_in_nested_in_dicts_and_tuples(files: Files) -> None:
    spec = files.load(
        """
        @pipeline
        def p(n: int = 1):
            a = src(n)
            b = src(n)
            merge({"first": a, "rest": (b, {"n": n, "k": [1, a]})})
        """
    )
    m = spec.step("merge")
    assert m.depends_on == ["src", "src-2"]
    assert m.inputs == {
        "parts": {
            "first": {"$step": "src"},
            "rest": [{"$step": "src-2"}, {"n": {"$param": "n"}, "k": [1, {"$step": "src"}]}],
        }
    }


def test_after_and_wait_for_add_ordering_only(files: Files) -> None:
    spec = files.load(
        """
        @pipeline
        def p():
            a = src()
            b = src()
            c = work().after(a, b)
            work(wait_for=c)
            work(wait_for=[a, c])
            work(1).after(a).after(a)
        """
    )
    assert deps(spec) == {
        "src": [],
        "src-2": [],
        "work": ["src", "src-2"],
        "work-2": ["work"],
        "work-3": ["src", "work"],
        "work-4": ["src"],
    }
    assert spec.step("work").inputs == {}
    assert spec.step("work-4").inputs == {"x": 1}


def test_wait_for_does_not_duplicate_a_data_dependency(files: Files) -> None:
    spec = files.load(
        """
        @pipeline
        def p():
            a = src()
            work(a, wait_for=a).after(a)
        """
    )
    assert spec.step("work").depends_on == ["src"]


@pytest.mark.parametrize(
    "call",
    ["work().after(1)", "work(wait_for='src')", "work(wait_for=[src(), 2])", "work().after(n)"],
)
def test_after_and_wait_for_take_step_outputs_only(files: Files, call: str) -> None:
    with pytest.raises(DSLError, match="step outputs"):
        files.load(f"\n@pipeline\ndef p(n: int = 1):\n    {call}\n")


def test_explicit_names_and_with_options(files: Files) -> None:
    spec = files.load(
        """
        @step(name="fetch")
        def download(url: str) -> str:
            return url

        @pipeline
        def p():
            download("a")
            download.with_options(name="fetch-eu", retries=4)("b")
            download("c")
            work.with_options(name="work-2")()
            work()
            work()
        """
    )
    assert [s.name for s in spec.steps] == [
        "fetch",
        "fetch-eu",
        "fetch-2",
        "work-2",
        "work",
        "work-3",
    ]
    assert spec.step("fetch-eu").retries == 4
    assert spec.step("fetch").retries == 0


def test_reference_lookalike_literal_stays_literal(files: Files) -> None:
    spec = files.load(
        """
        @pipeline
        def p():
            a = src()
            work({"$step": "src"})
        """
    )
    assert spec.step("work").inputs == {"x": {"$value": {"$step": "src"}}}
    assert spec.step("work").depends_on == []


def test_body_runs_once_at_compile_time(files: Files) -> None:
    ns = files.namespace(
        """
        CALLS = []

        @pipeline
        def p():
            CALLS.append(1)
            src()
        """
    )
    p = ns["p"]
    assert isinstance(p, Pipeline)
    assert p.spec() is p.spec()
    assert ns["CALLS"] == [1]


def test_pipeline_options(files: Files) -> None:
    spec = files.load(
        """
        @pipeline(
            name="nightly-etl",
            infrastructure="docker",
            timeout=600,
            labels={"team": "data"},
            validators=[required_together("start", "end")],
        )
        def p(start: str = "", end: str = ""):
            '''Load everything.'''
            src()
        """
    )
    assert spec.name == "nightly-etl"
    assert spec.description == "Load everything."
    assert spec.infrastructure == "docker"
    assert spec.timeout == 600
    assert spec.labels == {"team": "data"}
    assert spec.validators == [ValidatorSpec(kind="required_together", fields=["start", "end"])]


def test_description_option_wins_over_docstring(files: Files) -> None:
    spec = files.load(
        """
        @pipeline(description="explicit")
        def p():
            '''docstring'''
            src()
        """
    )
    assert spec.description == "explicit"


def test_works_without_future_annotations(files: Files) -> None:
    spec = files.load(
        """
        import datetime as dt
        from typing import Annotated, Optional
        from ferryman import Param, pipeline, step

        @step
        def s(x):
            return x

        @pipeline
        def p(a: int, b: Optional[str] = None, c: Annotated[int, Param(minimum=0)] = 1,
              d: dt.date = dt.date(2024, 1, 1), e: list[float] = [1.5]):
            s(a)
        """,
        header=False,
    )
    assert [(p.name, p.type) for p in spec.params] == [
        ("a", "integer"),
        ("b", "string"),
        ("c", "integer"),
        ("d", "date"),
        ("e", "array"),
    ]


# --------------------------------------------------------------------------- parameters


def test_param_types_from_the_signature(files: Files) -> None:
    spec = files.load(
        """
        @pipeline
        def p(
            s: str,
            i: int,
            f: float,
            b: bool,
            names: list[str],
            cfg: dict,
            cfg2: dict[str, int],
            mode: Literal["fast", "slow"],
            level: Literal[1, 2, 3],
            day: dt.date,
            maybe: Optional[int],
            maybe2: str | None,
            untyped,
            anything=None,
        ):
            src()
        """
    )
    assert [(p.name, p.type) for p in spec.params] == [
        ("s", "string"),
        ("i", "integer"),
        ("f", "number"),
        ("b", "boolean"),
        ("names", "array"),
        ("cfg", "object"),
        ("cfg2", "object"),
        ("mode", "string"),
        ("level", "integer"),
        ("day", "date"),
        ("maybe", "integer"),
        ("maybe2", "string"),
        ("untyped", "any"),
        ("anything", "any"),
    ]
    assert param(spec, "names") == {"name": "names", "type": "array", "items": "string"}
    assert param(spec, "mode")["enum"] == ["fast", "slow"]
    assert param(spec, "level")["enum"] == [1, 2, 3]
    for name in ("s", "i", "names", "day", "maybe", "maybe2", "untyped"):
        assert next(p for p in spec.params if p.name == name).required
    assert param(spec, "maybe")["nullable"] is True
    assert param(spec, "maybe2")["nullable"] is True
    assert "nullable" not in param(spec, "s")
    assert param(spec, "anything") == {
        "name": "anything",
        "required": False,
        "nullable": True,
    }


def test_param_defaults(files: Files) -> None:
    spec = files.load(
        """
        @pipeline
        def p(
            n: int = 3,
            ratio: float = 0.5,
            flag: bool = False,
            langs: list[str] = ["en", "hi"],
            cfg: dict = {"a": 1},
            day: dt.date = dt.date(2024, 2, 29),
            opt: Optional[int] = None,
            mode: Literal["a", "b"] = "b",
        ):
            src()
        """
    )
    defaults = {p.name: (p.required, p.default) for p in spec.params}
    assert defaults == {
        "n": (False, 3),
        "ratio": (False, 0.5),
        "flag": (False, False),
        "langs": (False, ["en", "hi"]),
        "cfg": (False, {"a": 1}),
        "day": (False, "2024-02-29"),
        "opt": (False, None),
        "mode": (False, "b"),
    }


def test_param_object_and_annotated_param(files: Files) -> None:
    spec = files.load(
        """
        @pipeline
        def p(
            need: Annotated[int, Param(minimum=0, description="required one")],
            limit: int = Param(10, minimum=1, maximum=100, description="rows"),
            k: Annotated[int, Param(minimum=1)] = 2,
            code: str = Param(pattern="^[a-z]+$", min_length=2, max_length=5),
        ):
            src()
        """
    )
    assert param(spec, "limit") == {
        "name": "limit",
        "type": "integer",
        "required": False,
        "default": 10,
        "description": "rows",
        "minimum": 1,
        "maximum": 100,
    }
    assert param(spec, "k") == {
        "name": "k",
        "type": "integer",
        "required": False,
        "default": 2,
        "minimum": 1,
    }
    assert param(spec, "need") == {
        "name": "need",
        "type": "integer",
        "description": "required one",
        "minimum": 0,
    }
    assert param(spec, "code") == {
        "name": "code",
        "type": "string",
        "pattern": "^[a-z]+$",
        "min_length": 2,
        "max_length": 5,
    }


def test_annotated_param_default_inside_the_marker(files: Files) -> None:
    spec = files.load(
        """
        @pipeline
        def p(k: Annotated[int, Param(5, minimum=1)]):
            src()
        """
    )
    assert param(spec, "k") == {
        "name": "k",
        "type": "integer",
        "required": False,
        "default": 5,
        "minimum": 1,
    }


def test_annotated_validator_markers_become_validator_specs(files: Files) -> None:
    spec = files.load(
        """
        from ferryman import date_string, url

        @pipeline(validators=[required_together("a", "b")])
        def p(
            lang: Annotated[str, language_code()] = "en",
            langs: Annotated[list[str], language_code(["en", "fr"])] = ["en"],
            day: Annotated[str, date_string(7)] = "2024-01-01",
            hook: Annotated[Optional[str], url()] = None,
            a: str = "",
            b: str = "",
        ):
            src()
        """
    )
    assert spec.validators == [
        ValidatorSpec(kind="required_together", fields=["a", "b"]),
        ValidatorSpec(kind="language", fields=["lang"]),
        ValidatorSpec(kind="language", fields=["langs"], options={"allowed": ["en", "fr"]}),
        ValidatorSpec(kind="date", fields=["day"], options={"max_age_days": 7}),
        ValidatorSpec(kind="url", fields=["hook"]),
    ]
    assert param(spec, "lang")["type"] == "string"
    assert param(spec, "langs")["items"] == "string"
    assert param(spec, "hook")["nullable"] is True


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        ("set[int]", "unsupported type"),
        ("bytes", "unsupported type"),
        ("complex", "unsupported type"),
        ("int | str", "unsupported union type"),
        ("Optional[int | str]", "unsupported union type"),
        ("list[set[int]]", "unsupported list item type"),
        ("list[list[int]]", "unsupported list item type"),
    ],
)
def test_unsupported_param_types(files: Files, annotation: str, expected: str) -> None:
    with pytest.raises(DSLError) as exc:
        files.load(f"\n@pipeline\ndef p(x: {annotation}):\n    src()\n")
    msg = str(exc.value)
    assert "pipeline 'p'" in msg
    assert "parameter 'x'" in msg
    assert expected in msg


def test_unsupported_type_message_lists_the_supported_ones(files: Files) -> None:
    with pytest.raises(DSLError) as exc:
        files.load("\n@pipeline\ndef p(x: bytes):\n    src()\n")
    for word in ("str", "int", "float", "bool", "date", "list[...]", "dict", "Literal[...]"):
        assert word in str(exc.value)


def test_non_json_default_is_refused(files: Files) -> None:
    with pytest.raises(DSLError, match="default of 'x' is not JSON-serialisable"):
        files.load("\n@pipeline\ndef p(x: Any = object()):\n    src()\n")


def test_var_args_are_refused(files: Files) -> None:
    with pytest.raises(DSLError, match=r"\*args/\*\*kwargs"):
        files.load("\n@pipeline\ndef p(**kw):\n    src()\n")


def test_json_schema_of_a_dsl_pipeline(files: Files) -> None:
    spec = files.load(
        """
        @pipeline
        def p(n: Annotated[int, Param(minimum=1)] = 2, langs: list[str] = ["en"]):
            src()
        """
    )
    schema = json_schema(spec)
    assert schema["title"] == "p parameters"
    assert schema["properties"]["n"]["minimum"] == 1
    assert schema["properties"]["langs"]["items"] == {"type": "string"}
    assert schema.get("required", []) == []


# --------------------------------------------------------------------------- placeholders


@pytest.mark.parametrize(
    "body",
    [
        "if n:\n        src()",
        "src(n + 1)",
        "src(1 + n)",
        "src(n - 1)",
        "src(n * 2)",
        "src(n > 1)",
        "src(n <= 1)",
        "src(len(n))",
        "src(n[0])",
        "src(list(n))",
        "a = src()\n    if a:\n        src()",
        "a = src()\n    work(a + [1])",
        "a = src()\n    work(a[0])",
        "a = src()\n    work([x for x in a])",
        "a = src()\n    work(sorted(a))",
        "a = src()\n    work(a < 1)",
    ],
)
def test_placeholders_refuse_computation(files: Files, body: str) -> None:
    with pytest.raises(DSLError) as exc:
        files.load(f"\n@pipeline\ndef p(n: int = 1):\n    {body}\n")
    assert "placeholder" in str(exc.value)
    assert "static" in str(exc.value)


@pytest.mark.parametrize("expr", ["2 * n", "1 - n", "n / 2", "n // 2", "n % 2", "-n"])
def test_placeholders_refuse_other_arithmetic(files: Files, expr: str) -> None:
    with pytest.raises(DSLError, match="placeholder"):
        files.load(f"\n@pipeline\ndef p(n: int = 1):\n    src({expr})\n")


def test_placeholders_refuse_string_formatting(files: Files) -> None:
    with pytest.raises(DSLError, match="placeholder"):
        files.load('\n@pipeline\ndef p(day: str = "x"):\n    work(f"data/{day}.csv")\n')


def test_placeholders_refuse_equality_branches(files: Files) -> None:
    with pytest.raises(DSLError, match="placeholder"):
        files.load(
            """
            @pipeline
            def p(mode: str = "fast"):
                if mode == "fast":
                    work(1)
                else:
                    work(2)
            """
        )


@pytest.mark.parametrize(
    "arg", ["object()", "{1, 2}", "dt.date(2024, 1, 1)", "b'x'", "float('nan') if False else src"]
)
def test_non_json_literal_argument(files: Files, arg: str) -> None:
    with pytest.raises(DSLError) as exc:
        files.load(f"\n@pipeline\ndef p():\n    work({arg})\n")
    assert "step 'work'" in str(exc.value)
    assert "not JSON-serialisable" in str(exc.value)


def test_bad_arguments_name_the_step(files: Files) -> None:
    with pytest.raises(DSLError, match=r"step 'work':.*unexpected keyword argument 'zzz'"):
        files.load("\n@pipeline\ndef p():\n    work(zzz=1)\n")
    with pytest.raises(DSLError, match=r"step 'src':.*too many positional arguments"):
        files.load("\n@pipeline\ndef p():\n    src(1, 2, 3)\n")


def test_body_must_call_a_step(files: Files) -> None:
    with pytest.raises(DSLError, match="the body calls no step"):
        files.load("\n@pipeline\ndef p(n: int = 1):\n    pass\n")


# --------------------------------------------------------------------------- calling things


@step
def double(x: int) -> int:
    return x * 2


@pipeline
def doubling(x: int = 1) -> None:
    double(x)


def test_step_outside_a_pipeline_is_a_plain_call(files: Files) -> None:
    assert double(21) == 42
    assert isinstance(double, Step)
    assert double.__name__ == "double"
    assert double.fn(2) == 4
    ns = files.namespace("\n@pipeline\ndef p():\n    src(2)\n")
    assert ns["src"](3) == [0, 1, 2]
    assert ns["work"]("x", i=5) == "x"
    assert ns["merge"]([1, 2]) == [1, 2]


def test_step_from_the_users_own_module_is_found_by_file() -> None:
    """A module of the user's (not installed) is referenced by path, so the step
    does not depend on the worker's current directory."""
    spec = doubling.spec()
    assert spec.step("double").function == FunctionRef(
        file=str(Path(__file__).resolve()), qualname="double"
    )
    assert spec.step("double").inputs == {"x": {"$param": "x"}}


def test_step_from_an_installed_module_uses_the_module_name() -> None:
    import json

    from ferryman.dsl.decorators import _function_ref

    assert _function_ref(json.dumps) == {"module": "json", "qualname": "dumps"}


def test_calling_a_pipeline_directly_is_an_error(files: Files) -> None:
    with pytest.raises(DSLError, match="is not called directly"):
        doubling(3)
    ns = files.namespace("\n@pipeline\ndef p():\n    src()\n")
    with pytest.raises(DSLError, match="pipeline 'p' is not called directly"):
        ns["p"]()


def test_calling_a_pipeline_inside_another_is_an_error(files: Files) -> None:
    with pytest.raises(DSLError, match="is not called directly"):
        files.load(
            """
            @pipeline
            def inner():
                src()

            @pipeline
            def outer():
                inner()
            """,
            attr="outer",
        )


def test_steps_work_again_after_a_failed_compile(files: Files) -> None:
    ns = files.namespace(
        """
        @pipeline
        def bad(n: int = 1):
            if n:
                src()
        """
    )
    with pytest.raises(DSLError):
        ns["bad"].spec()
    assert ns["src"](2) == [0, 1]  # no builder left active


# --------------------------------------------------------------------------- step options


def test_step_options_land_in_the_step_spec(files: Files) -> None:
    spec = files.load(
        """
        @step(
            retries=3,
            retry_delay=0.5,
            retry_backoff=3.0,
            retry_jitter=0.0,
            retry_max_delay=20.0,
            timeout=30,
            infrastructure="docker",
            infra_overrides={"image": "python:3.12"},
            env={"MODE": "prod", "UNSET": None},
            secrets=["API_KEY"],
            resources={"cpu": "1"},
        )
        def heavy(x: int) -> int:
            return x

        @pipeline
        def p(n: int = 1):
            heavy(n)
            src()
        """
    )
    s = spec.step("heavy")
    assert (s.retries, s.retry_delay, s.retry_backoff, s.retry_jitter, s.retry_max_delay) == (
        3,
        0.5,
        3.0,
        0.0,
        20.0,
    )
    assert s.timeout == 30
    assert s.infrastructure == "docker"
    assert s.infra_overrides == {"image": "python:3.12"}
    assert s.env == {"MODE": "prod", "UNSET": None}
    assert s.secrets == ["API_KEY"]
    assert s.resources == {"cpu": "1"}
    assert s.retry_policy.max_attempts == 4
    plain = spec.step("src")
    assert (plain.retries, plain.timeout, plain.infrastructure, plain.env) == (0, None, None, {})


def test_unknown_step_option() -> None:
    with pytest.raises(DSLError) as exc:
        step(retry=3)
    assert "unknown step option(s) ['retry']" in str(exc.value)
    assert "retries" in str(exc.value)  # the known ones are listed


def test_unknown_pipeline_option() -> None:
    with pytest.raises(DSLError, match=r"unknown pipeline option\(s\) \['schedule'\]"):
        pipeline(schedule="* * * * *")


def test_invalid_step_option_value_is_a_dsl_error(files: Files) -> None:
    with pytest.raises(DSLError, match="pipeline 'p'"):
        files.load(
            """
            @step(retries=-1)
            def s():
                pass

            @pipeline
            def p():
                s()
            """
        )


def test_step_defined_inside_a_function(files: Files) -> None:
    with pytest.raises(DSLError, match="must be defined at module level"):
        files.load(
            """
            @pipeline
            def p():
                @step
                def inner():
                    return 1

                inner()
            """
        )


def test_step_made_by_a_factory_function(files: Files) -> None:
    with pytest.raises(DSLError, match="step 'made' must be defined at module level"):
        files.load(
            """
            def factory():
                @step
                def made():
                    return 1
                return made

            made = factory()

            @pipeline
            def p():
                made()
            """
        )


# --------------------------------------------------------------------------- loader


TWO = """
@pipeline
def first():
    src()

@pipeline
def second():
    work()
"""


def test_two_pipelines_need_a_name(files: Files) -> None:
    path = files.write(TWO)
    with pytest.raises(PipelineNotFound) as exc:
        load_pipeline(str(path))
    msg = str(exc.value)
    assert "defines 2 pipelines (first, second)" in msg
    assert f"{path}:NAME" in msg
    assert load_pipeline(f"{path}:first").name == "first"
    assert load_pipeline(f"{path}:second").name == "second"


def test_unknown_pipeline_name_lists_the_names(files: Files) -> None:
    path = files.write(TWO)
    with pytest.raises(PipelineNotFound, match=r"no pipeline 'third' \(pipelines: first, second\)"):
        load_pipeline(f"{path}:third")
    with pytest.raises(PipelineNotFound, match="no pipeline 'src'"):
        load_pipeline(f"{path}:src")  # a step is not a pipeline


def test_file_without_pipelines(files: Files) -> None:
    path = files.write("")
    with pytest.raises(PipelineNotFound, match=r"defines 0 pipelines \(none\)"):
        load_pipeline(str(path))


def test_missing_file_and_module(tmp_path: Path) -> None:
    with pytest.raises(PipelineNotFound, match="no such file"):
        load_pipeline(str(tmp_path / "nope.py"))
    with pytest.raises(PipelineNotFound, match="cannot import module"):
        load_pipeline("ferryman_no_such_module_xyz:p")


def test_importable_module_reference() -> None:
    spec = load_pipeline(f"{__name__}:doubling")
    assert spec == doubling.spec()


def test_pipeline_name_option_vs_attribute(files: Files) -> None:
    path = files.write('\n@pipeline(name="pretty-name")\ndef ugly():\n    src()\n')
    assert load_pipeline(f"{path}:ugly").name == "pretty-name"


def test_same_file_compiled_twice_gives_the_same_version(files: Files) -> None:
    path = files.write(
        """
        @pipeline
        def p(n: int = 2, langs: list[str] = ["en"]):
            xs = src(n)
            merge([work(xs, i=i) for i in range(3)])
        """
    )
    first = load_pipeline(str(path))
    for name in [m for m in sys.modules if m.startswith(USER_MODULE_PREFIX + path.stem)]:
        del sys.modules[name]  # force a fresh import and compile
    second = load_pipeline(str(path))
    assert second is not first
    assert second == first
    assert second.version == first.version
    assert second.canonical_json() == first.canonical_json()


def test_a_changed_pipeline_gets_a_new_version(files: Files) -> None:
    a = files.load("\n@pipeline\ndef p():\n    src(1)\n", name="same.py")
    for name in [m for m in sys.modules if m.startswith(USER_MODULE_PREFIX + "same")]:
        del sys.modules[name]
    b = files.load("\n@pipeline\ndef p():\n    src(2)\n", name="same.py")
    assert a.version != b.version


# --------------------------------------------------------------------------- validate_params


PARAMS = """
@pipeline
def p(
    src_path: str,
    n: Annotated[int, Param(minimum=1)] = 3,
    langs: list[str] = ["en"],
    lang: Annotated[str, language_code()] = "en",
    mode: Literal["fast", "slow"] = "fast",
    opt: Optional[int] = None,
):
    src(n)
"""


def test_validate_params_fills_defaults(files: Files) -> None:
    spec = files.load(PARAMS)
    assert validate_params(spec, {"src_path": "s3://x"}) == {
        "src_path": "s3://x",
        "n": 3,
        "langs": ["en"],
        "lang": "en",
        "mode": "fast",
        "opt": None,
    }


def test_list_param_with_a_list_default(files: Files) -> None:
    spec = files.load(
        """
        @pipeline
        def p(langs: list[str] = ["en"], langs2: Annotated[list[str], language_code()] = ["hi"]):
            src()
        """
    )
    assert validate_params(spec, {}) == {"langs": ["en"], "langs2": ["hi"]}
    assert validate_params(spec, None) == {"langs": ["en"], "langs2": ["hi"]}
    assert validate_params(spec, {"langs": ["ta", "te"]})["langs"] == ["ta", "te"]
    # the default is not shared between runs
    out = validate_params(spec, {})
    out["langs"].append("xx")
    assert validate_params(spec, {})["langs"] == ["en"]
    assert spec.params[0].default == ["en"]


def test_validate_params_coerces_and_accepts_valid_values(files: Files) -> None:
    spec = files.load(PARAMS)
    out = validate_params(
        spec,
        {"src_path": "x", "n": "7", "langs": ["hi", "ta"], "lang": "hi", "mode": "slow", "opt": 4},
    )
    assert out["n"] == 7
    assert out["langs"] == ["hi", "ta"]
    assert out["mode"] == "slow"
    assert out["opt"] == 4


def test_validate_params_reports_all_errors_with_paths(files: Files) -> None:
    spec = files.load(PARAMS)
    with pytest.raises(ParamsInvalid) as exc:
        validate_params(
            spec,
            {
                "n": 0,
                "langs": ["en", 3],
                "lang": "fr",
                "mode": "medium",
                "zzz": 1,
            },
        )
    errors = {e.path: e.reason for e in exc.value.errors}
    assert set(errors) == {"src_path", "n", "langs.1", "mode", "zzz", "lang"}
    assert errors["src_path"] == "Field required"
    assert "greater than or equal to 1" in errors["n"]
    assert "valid string" in errors["langs.1"]
    assert "'fast' or 'slow'" in errors["mode"]
    assert errors["zzz"].startswith("unknown parameter (known: src_path, n, langs, lang")
    assert "'fr' is not an allowed language code" in errors["lang"]
    # the message carries every error too
    for path in errors:
        assert f"{path}:" in str(exc.value)


def test_validator_error_on_a_field_with_a_type_error_is_reported_once(files: Files) -> None:
    spec = files.load(PARAMS)
    with pytest.raises(ParamsInvalid) as exc:
        validate_params(spec, {"src_path": "x", "lang": 5})
    assert [e.path for e in exc.value.errors] == ["lang"]


def test_validator_checks_a_defaulted_field(files: Files) -> None:
    spec = files.load(
        """
        @pipeline
        def p(lang: Annotated[str, language_code(["en"])] = "hi"):
            src()
        """
    )
    with pytest.raises(ParamsInvalid) as exc:
        validate_params(spec, {})
    assert [e.path for e in exc.value.errors] == ["lang"]


def test_validate_params_rejects_a_non_object(files: Files) -> None:
    spec = files.load(PARAMS)
    with pytest.raises(ParamsInvalid, match="parameters must be a JSON object"):
        validate_params(spec, ["x"])  # type: ignore[arg-type]


def test_validate_params_with_a_given_date(files: Files) -> None:
    spec = files.load(
        """
        @pipeline
        def p(day: dt.date):
            src()
        """
    )
    assert validate_params(spec, {"day": "2024-03-01"}) == {"day": "2024-03-01"}
    with pytest.raises(ParamsInvalid) as exc:
        validate_params(spec, {"day": "yesterday"})
    assert exc.value.errors[0].path == "day"


# --------------------------------------------------------------------------- known bugs


def test_validate_params_with_a_date_default(files: Files) -> None:
    spec = files.load(
        """
        @pipeline
        def p(day: dt.date = dt.date(2024, 1, 2)):
            src()
        """
    )
    assert validate_params(spec, {}) == {"day": "2024-01-02"}


def test_annotated_param_keeps_the_default_param_description(files: Files) -> None:
    spec = files.load(
        """
        @pipeline
        def p(limit: Annotated[int, Param(minimum=1)] = Param(10, description="rows")):
            src()
        """
    )
    assert param(spec, "limit")["description"] == "rows"
    assert param(spec, "limit")["minimum"] == 1


def test_with_options_rejects_unknown_options() -> None:
    with pytest.raises(DSLError, match=r"unknown step option\(s\) \['retry'\]"):
        double.with_options(retry=3)


# ------------------------------------------------------------- defaults (issue 12, item 6)


def test_invalid_defaults_are_refused_like_yaml(files: Files) -> None:
    with pytest.raises(DSLError) as exc:
        files.load(
            """
            @pipeline
            def p(
                n: int = "five",
                mode: Literal["full", "incr"] = "fulll",
                k: int = Param(0, minimum=1),
                m: Annotated[int, Param(maximum=3)] = 4,
                langs: list[int] = [1, "x"],
                fine: int = 3,
                empty: Optional[int] = None,
            ):
                src()
            """
        )
    lines = str(exc.value).splitlines()
    assert lines[0] == "pipeline 'p': invalid parameter defaults:"
    # the same paths and messages as YAML's check of its defaults
    assert lines[1:] == [
        "  - params.n.default: Input should be a valid integer, "
        "unable to parse string as an integer",
        "  - params.mode.default: Input should be 'full' or 'incr'",
        "  - params.k.default: Input should be greater than or equal to 1",
        "  - params.m.default: Input should be less than or equal to 3",
        "  - params.langs.default[1]: Input should be a valid integer, "
        "unable to parse string as an integer",
    ]


def test_valid_defaults_still_compile(files: Files) -> None:
    spec = files.load(
        """
        @pipeline
        def p(n: int = 3, mode: Literal["full", "incr"] = "incr", k: int = Param(1, minimum=1),
              day: dt.date = dt.date(2024, 1, 2), x: float = 2):
            src()
        """
    )
    assert validate_params(spec, {}) == {
        "n": 3, "mode": "incr", "k": 1, "day": "2024-01-02", "x": 2.0,
    }  # fmt: skip

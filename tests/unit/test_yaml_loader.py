"""YAML/JSON pipeline files compile to the same ``PipelineSpec`` as the DSL."""

from __future__ import annotations

import json
import os
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from ferryman.domain.params import ParamsInvalid, validate_params
from ferryman.domain.spec import FunctionRef
from ferryman.dsl.yaml_loader import PipelineFileError, load_pipeline_file, spec_from_mapping

ROOT = Path(__file__).resolve().parents[2]

FULL = """\
name: etl
description: Full example
infrastructure: process
timeout: 600
labels: {team: data}
params:
  source: {type: string, default: "s3://x", description: Where from}
  limit: {type: integer, default: 10, minimum: 1}
  lang: {type: string, default: en}
  langs: {type: array, items: string, required: false}
  a: {type: str, required: false}
  b: {type: str, required: false}
  day: date
  flag: {type: bool, default: false, required: true}
validators:
  - {kind: language, fields: [lang]}
  - {kind: language, fields: [langs], options: {allowed: [en, hi]}}
  - {kind: required_together, fields: [a, b]}
  - {kind: date, fields: [day], max_age_days: 30}
steps:
  - name: extract
    function: steps.py:extract
    inputs: {source: "${params.source}", limit: 3}
    retries: 2
    retry_delay: 0.5
    timeout: 30
    infrastructure: inline
    env: {FOO: bar, UNSET_ME: null, WORKERS: 4}
  - name: other
    function: mypkg.jobs:Other.run
  - name: load
    function: steps.py:load
    inputs:
      rows: "${steps.extract}"
      nested: {all: ["${steps.extract}", "${params.limit}"], literal: {$param: limit}}
      escaped: "$${params.limit}"
      plain: "cost: ${HOME}"
    depends_on: [other]
  - name: report
    kind: container
    image: busybox
    command: ["echo", "${params.source}", "rows=${steps.load}"]
    args: ["--from", "${ steps.extract }"]
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "steps.py").write_text("def extract(source, limit): ...\ndef load(rows): ...\n")
    return tmp_path


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(PipelineFileError) as info:
        load_pipeline_file(path)
    err = info.value
    assert str(path) in str(err)
    assert "Traceback" not in str(err)
    for p in err.problems:
        assert f"\n  - {p}" in str(err)
    return err.problems


# --------------------------------------------------------------------------- a full file


class TestFullFile:
    def test_pipeline_fields(self, project: Path) -> None:
        spec = load_pipeline_file(write(project, "p.yaml", FULL))
        assert spec.name == "etl"
        assert spec.description == "Full example"
        assert spec.infrastructure == "process"
        assert spec.timeout == 600
        assert spec.labels == {"team": "data"}
        assert [s.name for s in spec.steps] == ["extract", "other", "load", "report"]

    def test_params(self, project: Path) -> None:
        spec = load_pipeline_file(write(project, "p.yaml", FULL))
        p = {x.name: x for x in spec.params}
        assert list(p) == ["source", "limit", "lang", "langs", "a", "b", "day", "flag"]
        assert (p["source"].type, p["source"].required, p["source"].default) == (
            "string",
            False,
            "s3://x",
        )
        assert p["source"].description == "Where from"
        assert (p["limit"].type, p["limit"].minimum) == ("integer", 1)
        assert (p["langs"].type, p["langs"].items, p["langs"].required) == (
            "array",
            "string",
            False,
        )
        assert p["langs"].nullable  # optional with a null default accepts null
        assert not p["lang"].nullable
        assert (p["a"].type, p["a"].required) == ("string", False)
        assert (p["day"].type, p["day"].required) == ("date", True)
        assert (p["flag"].type, p["flag"].required) == ("boolean", True)

    def test_validators(self, project: Path) -> None:
        spec = load_pipeline_file(write(project, "p.yaml", FULL))
        assert [(x.kind, x.fields, x.options) for x in spec.validators] == [
            ("language", ["lang"], {}),
            ("language", ["langs"], {"allowed": ["en", "hi"]}),
            ("required_together", ["a", "b"], {}),
            ("date", ["day"], {"max_age_days": 30}),
        ]

    def test_steps(self, project: Path) -> None:
        spec = load_pipeline_file(write(project, "p.yaml", FULL))
        extract = spec.step("extract")
        assert extract.function == FunctionRef(file=str(project / "steps.py"), qualname="extract")
        assert os.path.isabs(extract.function.file or "")
        assert extract.inputs == {"source": {"$param": "source"}, "limit": 3}
        assert (extract.retries, extract.retry_delay, extract.timeout) == (2, 0.5, 30)
        assert extract.infrastructure == "inline"
        assert extract.env == {"FOO": "bar", "UNSET_ME": None, "WORKERS": "4"}
        assert spec.step("other").function == FunctionRef(module="mypkg.jobs", qualname="Other.run")

        load = spec.step("load")
        assert load.depends_on == ["other", "extract"]
        assert load.inputs == {
            "rows": {"$step": "extract"},
            "nested": {
                "all": [{"$step": "extract"}, {"$param": "limit"}],
                "literal": {"$value": {"$param": "limit"}},
            },
            "escaped": "${params.limit}",
            "plain": "cost: ${HOME}",
        }

    def test_container_templates_stay_text(self, project: Path) -> None:
        spec = load_pipeline_file(write(project, "p.yaml", FULL))
        report = spec.step("report")
        assert report.kind == "container"
        assert report.command == ["echo", "${params.source}", "rows=${steps.load}"]
        assert report.args == ["--from", "${ steps.extract }"]
        assert report.depends_on == ["load", "extract"]

    def test_params_validate(self, project: Path) -> None:
        spec = load_pipeline_file(write(project, "p.yaml", FULL))
        with pytest.raises(ParamsInvalid) as info:
            validate_params(spec, {"day": "2020-01-01", "flag": True, "a": "x", "langs": ["ta"]})
        assert [e.path for e in info.value.errors] == ["langs.0", "b", "day"]

    def test_json_and_yaml_give_the_same_version(self, project: Path) -> None:
        from_yaml = load_pipeline_file(write(project, "p.yaml", FULL))
        data = yaml.safe_load(FULL)
        (project / "p.json").write_text(json.dumps(data, indent=2))
        from_json = load_pipeline_file(project / "p.json")
        assert from_json == from_yaml
        assert from_json.version == from_yaml.version
        (project / "p.yml").write_text(FULL)
        assert load_pipeline_file(project / "p.yml").version == from_yaml.version

    def test_unquoted_yaml_dates_are_strings(self, project: Path) -> None:
        path = write(
            project,
            "d.yaml",
            """\
            name: d
            params:
              day: {type: date, default: 2024-05-01}
            steps:
              - {name: a, function: m:f, inputs: {when: 2024-05-02}}
            """,
        )
        spec = load_pipeline_file(path)
        assert spec.params[0].default == "2024-05-01"
        assert spec.steps[0].inputs == {"when": "2024-05-02"}


# --------------------------------------------------------------------------- the shipped example


def test_example_file_loads() -> None:
    spec = load_pipeline_file(ROOT / "examples" / "etl.yaml")
    assert spec.name == "etl"
    assert [s.name for s in spec.steps] == ["extract", "transform", "load"]
    for s in spec.steps:
        assert s.function is not None
        assert s.function.file == str(ROOT / "examples" / "etl_steps.py")
    assert spec.step("load").depends_on == ["transform"]
    assert validate_params(spec, {})["limit"] == 10


def test_example_functions_run() -> None:
    import importlib.util

    loc = importlib.util.spec_from_file_location("etl_steps_test", ROOT / "examples/etl_steps.py")
    assert loc is not None and loc.loader is not None
    module = importlib.util.module_from_spec(loc)
    loc.loader.exec_module(module)
    rows = module.extract("s3://x", 3)
    assert module.load(module.transform(rows)) == 3


def test_guide_example_matches_example_file() -> None:
    guide = (ROOT / "docs" / "pipelines-yaml.md").read_text()
    match = re.search(r"```yaml\n(.*?)```", guide, re.S)
    assert match, "docs/pipelines-yaml.md has no yaml block"
    assert match.group(1) == (ROOT / "examples" / "etl.yaml").read_text()


# --------------------------------------------------------------------------- errors


class TestErrors:
    def test_unknown_step_in_depends_on(self, project: Path) -> None:
        path = write(
            project,
            "p.yaml",
            """\
            name: p
            steps:
              - {name: a, function: m:f}
              - {name: b, function: m:f, depends_on: [a, nope]}
            """,
        )
        assert problems(path) == ["steps[1].depends_on[1]: unknown step 'nope' (steps: a, b)"]

    def test_unknown_step_and_param_in_references(self, project: Path) -> None:
        path = write(
            project,
            "p.yaml",
            """\
            name: p
            params: {x: int}
            steps:
              - {name: a, function: m:f, inputs: {v: "${steps.ghost}", w: "${params.y}"}}
              - {name: b, kind: container, image: busybox, command: ["${steps.b}", "${params.z}"]}
            """,
        )
        assert problems(path) == [
            "steps[0].inputs.v: unknown step 'ghost' (steps: a, b)",
            "steps[0].inputs.w: unknown parameter 'y' (params: x)",
            "steps[1].command[0]: step 'b' depends on itself",
            "steps[1].command[1]: unknown parameter 'z' (params: x)",
        ]

    def test_cycle(self, project: Path) -> None:
        path = write(
            project,
            "p.yaml",
            """\
            name: p
            steps:
              - {name: a, function: m:f, depends_on: [c]}
              - {name: b, function: m:f, inputs: {x: "${steps.a}"}}
              - {name: c, function: m:f, depends_on: [b]}
              - {name: d, function: m:f}
            """,
        )
        assert problems(path) == ["steps: dependency cycle between a, b, c"]

    def test_bad_retries(self, project: Path) -> None:
        path = write(
            project,
            "p.yaml",
            """\
            name: p
            steps:
              - {name: a, function: m:f}
              - {name: b, function: m:f, retries: -1, timeout: 0}
            """,
        )
        assert problems(path) == [
            "steps[1].retries: Input should be greater than or equal to 0",
            "steps[1].timeout: Input should be greater than 0",
        ]

    def test_missing_function(self, project: Path) -> None:
        path = write(project, "p.yaml", "name: p\nsteps:\n  - name: a\n")
        assert problems(path) == ["steps[0]: python step 'a' needs a function"]

    @pytest.mark.parametrize(
        ("function", "message"),
        [
            ("nofile.py:f", "steps[0].function: file not found: {dir}/nofile.py"),
            ("justaname", "steps[0].function: invalid function reference 'justaname'"),
            ("m:1x", "steps[0].function: invalid function reference 'm:1x'"),
            ("my-pkg:f", "steps[0].function: invalid module name 'my-pkg'"),
            ("[1]", "steps[0].function: must be a string, not a list"),
        ],
    )
    def test_bad_function(self, project: Path, function: str, message: str) -> None:
        path = write(project, "p.yaml", f"name: p\nsteps:\n  - name: a\n    function: {function}\n")
        (problem,) = problems(path)
        assert problem.startswith(message.format(dir=project))

    def test_invalid_yaml_syntax(self, project: Path) -> None:
        path = write(project, "p.yaml", "name: p\nsteps:\n  - name: a\n   function: m:f\n")
        (problem,) = problems(path)
        assert problem.startswith("invalid YAML at line 4, column 4: ")

    def test_invalid_json_syntax(self, project: Path) -> None:
        path = write(project, "p.json", '{"name": "p", "steps": [}')
        assert problems(path) == ["invalid JSON at line 1, column 25: Expecting value"]

    def test_duplicate_keys(self, project: Path) -> None:
        (yaml_problem,) = problems(write(project, "p.yaml", "name: p\nparams: {a: int, a: str}\n"))
        assert "duplicate key 'a'" in yaml_problem
        json_problems = problems(write(project, "p.json", '{"name": "p", "name": "q"}'))
        assert json_problems == ["invalid JSON: duplicate key 'name'"]

    def test_unknown_param_type(self, project: Path) -> None:
        path = write(
            project,
            "p.yaml",
            """\
            name: p
            params:
              x: {type: strng}
              y: {type: array, items: thing}
              z: 5
            steps: [{name: a, function: m:f}]
            """,
        )
        assert problems(path) == [
            "params.x.type: unknown type 'strng' (use one of: string, integer, number, "
            "boolean, array, object, date, any, json_config)",
            "params.y.items: unknown type 'thing' (use one of: string, integer, number, "
            "boolean, array, object, date, any, json_config)",
            "params.z: must be a mapping or a type name, not a number",
        ]

    def test_bad_param_fields_and_defaults(self, project: Path) -> None:
        path = write(
            project,
            "p.yaml",
            """\
            name: p
            params:
              n: {type: integer, default: ten}
              m: {type: integer, minimum: 5, default: 1}
              k: {type: integer, minimum: many}
            steps: [{name: a, function: m:f}]
            """,
        )
        assert problems(path) == [
            "params.k.minimum: Input should be a valid number, unable to parse string as a number"
        ]
        path.write_text(path.read_text().replace("  k: {type: integer, minimum: many}\n", ""))
        assert problems(path) == [
            "params.n.default: Input should be a valid integer, "
            "unable to parse string as an integer",
            "params.m.default: Input should be greater than or equal to 5",
        ]

    def test_bad_validators(self, project: Path) -> None:
        path = write(
            project,
            "p.yaml",
            """\
            name: p
            params: {lang: str, day: date}
            validators:
              - {kind: language, fields: [language]}
              - {kind: colour, fields: [lang]}
              - {kind: date, fields: [day], max_age: 3}
              - {kind: required_together, fields: [lang]}
              - {fields: [lang]}
              - nope
            steps: [{name: a, function: m:f}]
            """,
        )
        found = problems(path)
        assert found[0] == "validators[0].fields[0]: unknown parameter 'language'"
        assert found[1].startswith("validators[1]: unknown validator kind 'colour' (known: ")
        assert found[2].startswith("validators[2]: validator 'date' has unknown option 'max_age'")
        assert found[3] == "validators[3]: validator 'required_together' needs at least 2 fields"
        assert found[4] == "validators[4].kind: Field required"
        assert found[5] == "validators[5]: must be a mapping with a 'kind', not a string"
        assert len(found) == 6

    def test_embedded_reference_in_input(self, project: Path) -> None:
        path = write(
            project,
            "p.yaml",
            """\
            name: p
            params: {bucket: str}
            steps: [{name: a, function: m:f, inputs: {path: "s3://${params.bucket}/x"}}]
            """,
        )
        (problem,) = problems(path)
        assert problem.startswith("steps[0].inputs.path: 's3://${params.bucket}/x': a ${params")

    def test_unknown_fields_with_suggestions(self, project: Path) -> None:
        path = write(
            project,
            "p.yaml",
            """\
            name: p
            descripton: typo
            params: {x: {type: int, defualt: 1}}
            steps: [{name: a, function: m:f, retrys: 2}]
            """,
        )
        assert sorted(problems(path)) == [
            "descripton: unknown field (did you mean 'description'?)",
            "params.x.defualt: unknown field (did you mean 'default'?)",
            "steps[0].retrys: unknown field (did you mean 'retries'?)",
        ]

    def test_every_problem_is_reported(self, project: Path) -> None:
        path = write(
            project,
            "p.yaml",
            """\
            name: bad name
            params: {x: {type: nope}}
            steps:
              - {name: a, function: m:f, retries: -1}
              - {name: a, function: m:f, depends_on: [zz]}
            """,
        )
        assert problems(path) == [
            "params.x.type: unknown type 'nope' (use one of: string, integer, number, "
            "boolean, array, object, date, any, json_config)",
            "steps[1].name: step name 'a' is used twice",
            "steps[1].depends_on[0]: unknown step 'zz' (steps: a, a)",
            "name: invalid pipeline name 'bad name': use letters, digits, '_', '-' or '.', "
            "starting with a letter or digit (at most 128 characters)",
            "steps[0].retries: Input should be greater than or equal to 0",
        ]

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("", "the file is empty"),
            ("- a\n- b\n", "the top level must be a mapping of pipeline fields, not a list"),
            ("name: p\n", "steps: Field required"),
            ("name: p\nsteps: []\n", "steps: a pipeline needs at least one step"),
            ("name: p\nsteps: {a: 1}\n", "steps: must be a list of steps, not a mapping"),
            ("name: p\nsteps: [3]\n", "steps[0]: must be a mapping, not a number"),
            ("name: p\nparams: [a]\nsteps: [{name: a, function: m:f}]\n", "params: must be a"),
            ("name: p\n1: x\nsteps: [{name: a, function: m:f}]\n", "key 1 must be a string"),
            ("steps: [{name: a, function: m:f}]\n", "name: Field required"),
        ],
    )
    def test_shape_errors(self, project: Path, text: str, message: str) -> None:
        (problem,) = problems(write(project, "p.yaml", text))
        assert problem.startswith(message)

    def test_file_errors(self, project: Path) -> None:
        assert problems(project / "missing.yaml") == ["file not found"]
        assert problems(write(project, "p.toml", "x = 1")) == [
            "unsupported file type '.toml' (use .yaml, .yml or .json)"
        ]
        (project / "bin.yaml").write_bytes(b"name: \xff\xfe\n")
        (problem,) = problems(project / "bin.yaml")
        assert problem.startswith("not UTF-8 text")

    def test_is_a_value_error(self) -> None:
        assert issubclass(PipelineFileError, ValueError)


# --------------------------------------------------------------------------- spec_from_mapping


class TestSpecFromMapping:
    def test_relative_files_use_base_dir_or_cwd(
        self, project: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        data: dict[str, Any] = {"name": "p", "steps": [{"name": "a", "function": "steps.py:load"}]}
        spec = spec_from_mapping(data, project)
        assert spec.steps[0].function == FunctionRef(
            file=str(project / "steps.py"), qualname="load"
        )
        monkeypatch.chdir(project)
        assert spec_from_mapping(data).version == spec.version

    def test_check_files_off(self, tmp_path: Path) -> None:
        data = {"name": "p", "steps": [{"name": "a", "function": "lib/x.py:f"}]}
        with pytest.raises(PipelineFileError, match="file not found"):
            spec_from_mapping(data, tmp_path)
        spec = spec_from_mapping(data, tmp_path, check_files=False)
        assert spec.steps[0].function == FunctionRef(file=str(tmp_path / "lib/x.py"), qualname="f")

    def test_function_mapping_form(self, project: Path) -> None:
        data = {
            "name": "p",
            "steps": [
                {"name": "a", "function": {"file": "steps.py", "qualname": "load"}},
                {"name": "b", "function": {"module": "pkg.mod", "qualname": "f"}},
            ],
        }
        spec = spec_from_mapping(data, project)
        assert spec.steps[0].function == FunctionRef(
            file=str(project / "steps.py"), qualname="load"
        )
        assert spec.steps[1].function == FunctionRef(module="pkg.mod", qualname="f")

    def test_source_names_the_data(self) -> None:
        with pytest.raises(PipelineFileError) as info:
            spec_from_mapping({"name": "p"}, source="request body")
        assert str(info.value) == "invalid pipeline file request body:\n  - steps: Field required"

    def test_not_a_mapping(self) -> None:
        with pytest.raises(PipelineFileError, match="not a list"):
            spec_from_mapping([], None)  # type: ignore[arg-type]

    def test_custom_validator_file_is_resolved(self, project: Path) -> None:
        (project / "rules.py").write_text(
            "def check(params):\n    return ['always wrong'] if params.get('x') == 1 else None\n"
        )
        data = {
            "name": "p",
            "params": {"x": {"type": "int", "default": 0}},
            "validators": [{"kind": "custom", "fields": ["x"], "ref": "rules.py:check"}],
            "steps": [{"name": "a", "function": "m:f"}],
        }
        spec = spec_from_mapping(data, project)
        assert spec.validators[0].options == {"ref": f"{project / 'rules.py'}:check"}
        assert validate_params(spec, {}) == {"x": 0}
        with pytest.raises(ParamsInvalid, match="always wrong"):
            validate_params(spec, {"x": 1})

    def test_options_given_twice(self) -> None:
        data = {
            "name": "p",
            "params": {"x": "str"},
            "validators": [
                {"kind": "url", "fields": "x", "schemes": ["s3"], "options": {"schemes": ["s3"]}}
            ],
            "steps": [{"name": "a", "function": "m:f"}],
        }
        with pytest.raises(PipelineFileError, match=r"validators\[0\]\.schemes: given both"):
            spec_from_mapping(data)

    def test_same_as_python_dsl_shape(self) -> None:
        """The markers of the DSL and the YAML form give identical validator specs."""
        from ferryman.domain.validators import date_string, language_code, required_together

        data = {
            "name": "p",
            "params": {"lang": "str", "day": "date", "a": "str", "b": "str"},
            "validators": [
                {"kind": "language", "fields": ["lang"]},
                {"kind": "date", "fields": ["day"], "max_age_days": 7},
                {"kind": "required_together", "fields": ["a", "b"]},
            ],
            "steps": [{"name": "a", "function": "m:f"}],
        }
        spec = spec_from_mapping(data)
        assert spec.validators == [
            language_code().to_spec("lang"),
            date_string(7).to_spec("day"),
            required_together("a", "b"),
        ]


def test_cycle_reported_with_other_problems(project: Path) -> None:
    path = write(
        project,
        "p.yaml",
        """\
        name: p
        params: {x: int}
        validators: [{kind: language, fields: [y]}]
        steps:
          - {name: a, function: m:f, depends_on: [b, ghost]}
          - {name: b, function: m:f, depends_on: [a]}
        """,
    )
    assert problems(path) == [
        "validators[0].fields[0]: unknown parameter 'y'",
        "steps[0].depends_on[1]: unknown step 'ghost' (steps: a, b)",
        "steps: dependency cycle between a, b",
    ]

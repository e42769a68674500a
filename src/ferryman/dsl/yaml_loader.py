"""YAML and JSON pipeline files: they compile to the same ``PipelineSpec`` as
the Python DSL.

Format (JSON files use the same keys)::

    name: etl                      # required
    description: Nightly ETL
    infrastructure: process        # default infrastructure of the steps
    timeout: 600                   # run timeout in seconds (optional)
    labels: {team: data}
    params:                        # name -> definition (or just a type name)
      source: {type: string, default: "s3://bucket/in.csv", description: Input}
      limit: {type: integer, default: 10, minimum: 1}
      lang: {type: string, default: en}
      langs: {type: array, items: string, required: false}
      day: date                    # shorthand: a required parameter of type date
    validators:
      - {kind: language, fields: [lang]}
      - {kind: date, fields: [day], max_age_days: 7}   # extra keys are options
      - {kind: required_together, fields: [a, b]}
    steps:
      - name: extract
        function: etl_steps.py:extract     # file relative to this file, or package.module:function
        inputs: {source: "${params.source}", limit: 3}
        retries: 2
        retry_delay: 0.5
        timeout: 30
        infrastructure: inline
        env: {FOO: bar, UNSET_ME: null}
      - name: load
        function: mypkg.etl:load
        inputs: {rows: "${steps.extract}"}  # depends_on: [extract] is added
        depends_on: [other]                 # extra ordering dependencies
      - name: report
        kind: container
        image: busybox
        command: ["echo", "${params.source}"]   # rendered when the step starts
    triggers:                      # run this pipeline when another one's run ends
      - pipeline: ingest           # the triggering pipeline
        namespace: default         # optional; default: this pipeline's namespace
        state: succeeded           # or states: [succeeded, failed, cancelled]
        params:                    # this pipeline's params, from the triggering run
          source: "${trigger.params.path}"      # its parameter
          limit: "${trigger.steps.count}"       # the output of its step
          upstream: "${trigger.run.id}"         # id, pipeline, namespace, version, state
        labels: {chained: "yes"}   # added; its labels are inherited unless
        inherit_labels: true       # inherit_labels: false

Rules:

- Param ``type`` is one of ``string integer number boolean array object date
  any`` (aliases ``str int float bool list dict``); ``items`` gives the item
  type of an array. A parameter with a ``default`` is optional unless
  ``required: true``; one without is required. An optional parameter whose
  default is null accepts null. Defaults are checked against their type.
- In ``inputs``, a string that is exactly ``${params.x}`` becomes the parameter
  ``x`` and exactly ``${steps.y}`` the output of step ``y`` (added to
  ``depends_on``). Lists and mappings are walked; every other value is a
  literal (a one-key mapping such as ``{$param: x}`` stays literal too).
  ``${params...}``/``${steps...}`` *inside* a longer input string is an error;
  write ``$${...}`` for the literal text ``${...}``.
- In a container step's ``command``/``args``, ``${params.x}`` and
  ``${steps.y}`` stay template text rendered when the step starts; referenced
  steps are added to ``depends_on`` and unknown names are errors.
- ``function: path/to/file.py:qualname`` is relative to the pipeline file's
  directory and stored as an absolute path; ``package.module:qualname`` is
  imported when the step runs.
- A ``custom`` validator's ``ref`` may also name a ``.py`` file relative to
  the pipeline file.
- Unquoted YAML dates (``2024-05-01``) are read as the string ``"2024-05-01"``.
- In a trigger's ``params``, a string that is exactly ``${trigger.params.x}``,
  ``${trigger.steps.y}`` or ``${trigger.run.f}`` reads the triggering run;
  every other value is a literal.

Any problem raises ``PipelineFileError`` naming the file and listing every
problem with its path, e.g. ``steps[1].retries: Input should be greater than
or equal to 0``.
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ferryman.domain.spec import (
    REF_KEYS,
    ParamSpec,
    PipelineSpec,
    StepSpec,
    TriggerSpec,
    ValidatorSpec,
)
from ferryman.domain.validators import check_validator_spec

__all__ = ["PipelineFileError", "load_pipeline_file", "spec_from_mapping"]

SUFFIXES = (".yaml", ".yml", ".json")

PARAM_TYPES = ("string", "integer", "number", "boolean", "array", "object", "date", "any")
TYPE_ALIASES = {
    "str": "string",
    "int": "integer",
    "float": "number",
    "bool": "boolean",
    "list": "array",
    "dict": "object",
}

_WHOLE_REF = re.compile(r"\$\{\s*(params|steps)\.([^{}\s]+)\s*\}")
_EMBEDDED_REF = re.compile(r"(?<!\$)\$\{\s*(?:params|steps)\.")
_TEMPLATE_REF = re.compile(r"(?<!\$)\$\{\s*(params|steps)\.([^{}\s]+)\s*\}")
_TRIGGER_REF = re.compile(r"\$\{\s*trigger\.(params|steps|run)\.([^{}\s]+)\s*\}")
_TRIGGER_EMBEDDED = re.compile(r"(?<!\$)\$\{\s*trigger\.")
_TRIGGER_KIND = {"params": "$param", "steps": "$step", "run": "$run"}
_QUALNAME = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")
_INVALID_FUNCTION = {"module": "invalid", "qualname": "invalid"}


class PipelineFileError(ValueError):
    """A pipeline file (or mapping) is invalid; ``problems`` lists every problem."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        listed = "".join(f"\n  - {p}" for p in problems)
        super().__init__(f"invalid pipeline file {source}:{listed}")


# --------------------------------------------------------------------------- files


def load_pipeline_file(path: str | Path) -> PipelineSpec:
    """Read a ``.yaml``/``.yml``/``.json`` pipeline file and compile it.

    Relative function files are resolved against the file's directory. Raises
    ``PipelineFileError`` for an unreadable file, invalid syntax or an invalid
    pipeline.
    """
    p = Path(path)
    source = str(p)
    suffix = p.suffix.lower()
    if suffix not in SUFFIXES:
        raise PipelineFileError(
            source, [f"unsupported file type {p.suffix!r} (use .yaml, .yml or .json)"]
        )
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PipelineFileError(source, ["file not found"]) from None
    except UnicodeDecodeError as exc:
        raise PipelineFileError(source, [f"not UTF-8 text: {exc.reason}"]) from None
    except OSError as exc:
        raise PipelineFileError(source, [f"cannot read file: {exc.strerror or exc}"]) from None
    data = _parse_json(text, source) if suffix == ".json" else _parse_yaml(text, source)
    if data is None:
        raise PipelineFileError(source, ["the file is empty"])
    return spec_from_mapping(data, Path(os.path.abspath(p.parent)), source=source)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys instead of keeping the last."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        try:
            duplicate = key in seen
        except TypeError:  # unhashable: construct_mapping reports it
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"found duplicate key {key!r}",
                key_node.start_mark,
            )
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def _parse_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        where = ""
        if exc.problem_mark is not None:
            where = f" at line {exc.problem_mark.line + 1}, column {exc.problem_mark.column + 1}"
        detail = exc.problem or "syntax error"
        if exc.context:
            detail += f" ({exc.context})"
        raise PipelineFileError(source, [f"invalid YAML{where}: {detail}"]) from None
    except yaml.YAMLError as exc:
        raise PipelineFileError(source, [f"invalid YAML: {exc}"]) from None


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _parse_json(text: str, source: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_unique_pairs)
    except json.JSONDecodeError as exc:
        raise PipelineFileError(
            source, [f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"]
        ) from None
    except ValueError as exc:
        raise PipelineFileError(source, [f"invalid JSON: {exc}"]) from None


# --------------------------------------------------------------------------- mapping


def spec_from_mapping(
    data: Mapping[str, Any],
    base_dir: Path | None = None,
    *,
    source: str | None = None,
    check_files: bool = True,
) -> PipelineSpec:
    """Compile parsed pipeline data (the file format above) into a ``PipelineSpec``.

    ``base_dir`` anchors relative ``.py`` references (default: the current
    directory); ``source`` names the data in error messages. With
    ``check_files`` a referenced ``.py`` file must exist. Raises
    ``PipelineFileError`` listing every problem.
    """
    name = source or "<pipeline>"
    if not isinstance(data, Mapping):
        raise PipelineFileError(
            name, [f"the top level must be a mapping of pipeline fields, not {_kind(data)}"]
        )
    compiler = _Compiler(Path(os.path.abspath(base_dir or Path.cwd())), check_files)
    spec = compiler.compile(data)
    if spec is None:
        raise PipelineFileError(name, compiler.problems)
    return spec


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {
        str: "a string",
        list: "a list",
        dict: "a mapping",
        int: "a number",
        float: "a number",
        bool: "a boolean",
    }.get(type(value), type(value).__name__)


class _Compiler:
    """One compilation: collects every problem instead of stopping at the first."""

    def __init__(self, base_dir: Path, check_files: bool) -> None:
        self.base_dir = base_dir
        self.check_files = check_files
        self.problems: list[str] = []
        self.graph_problems = 0
        self.param_names: list[str] = []
        self.param_order: list[str] = []  # names of the param dicts passed on, by index
        self.step_names: list[str] = []

    def problem(self, path: str, message: str, *, graph: bool = False) -> None:
        self.problems.append(f"{path}: {message}" if path else message)
        if graph:
            self.graph_problems += 1

    # ---------------------------------------------------------------- top level

    def compile(self, raw: Mapping[str, Any]) -> PipelineSpec | None:
        data = self.plain(raw, "")
        out = {
            k: v for k, v in data.items() if k not in ("params", "validators", "steps", "triggers")
        }
        if "params" in data:
            out["params"] = self.params(data["params"])
        if "validators" in data:
            out["validators"] = self.validators(data["validators"])
        if "steps" in data:
            out["steps"] = self.steps(data["steps"])
        if "triggers" in data:
            out["triggers"] = self.triggers(data["triggers"])
        try:
            spec = PipelineSpec.model_validate(out)
        except ValidationError as exc:
            self.pydantic_problems(exc)
            return None
        self.check_defaults(spec)
        return None if self.problems else spec

    def plain(self, value: Any, path: str) -> Any:
        """Dates to ISO strings (as JSON would have them); mapping keys must be strings."""
        if isinstance(value, dt.date):
            return value.isoformat()
        if isinstance(value, Mapping):
            out: dict[str, Any] = {}
            for k, v in value.items():
                if not isinstance(k, str):
                    self.problem(path, f"key {k!r} must be a string (quote it)")
                    continue
                out[k] = self.plain(v, f"{path}.{k}" if path else k)
            return out
        if isinstance(value, list):
            return [self.plain(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return value

    # ---------------------------------------------------------------- params

    def params(self, raw: Any) -> Any:
        if raw is None:
            return []
        if not isinstance(raw, dict):
            self.problem("params", f"must be a mapping of name to definition, not {_kind(raw)}")
            return []
        out: list[dict[str, Any]] = []
        for name, definition in raw.items():
            path = f"params.{name}"
            self.param_names.append(name)
            if definition is None:
                d: dict[str, Any] = {}
            elif isinstance(definition, str):
                d = {"type": definition}
            elif isinstance(definition, dict):
                d = dict(definition)
            else:
                self.problem(path, f"must be a mapping or a type name, not {_kind(definition)}")
                continue
            for key in ("type", "items"):
                if key in d:
                    d[key] = self.param_type(d[key], f"{path}.{key}")
            if "required" not in d:
                d["required"] = "default" not in d
            if "nullable" not in d and d["required"] is False and d.get("default") is None:
                d["nullable"] = True
            d["name"] = name
            self.param_order.append(name)
            out.append(d)
        return out

    def param_type(self, value: Any, path: str) -> str:
        if isinstance(value, str):
            t = TYPE_ALIASES.get(value, value)
            if t in PARAM_TYPES:
                return t
        self.problem(path, f"unknown type {value!r} (use one of: {', '.join(PARAM_TYPES)})")
        return "any"

    def check_defaults(self, spec: PipelineSpec) -> None:
        from ferryman.domain.params import build_model

        given = {p.name: p.default for p in spec.params if not p.required and p.default is not None}
        if not given:
            return
        try:
            model = build_model(spec)
        except TypeError:  # an unhashable spec cannot be cached; the run will say so
            return
        try:
            model.model_validate(given)
        except ValidationError as exc:
            for e in exc.errors(include_url=False):
                loc = e["loc"]
                if loc and loc[0] in given:
                    rest = _loc_path(loc[1:])
                    sep = "" if not rest or rest.startswith("[") else "."
                    self.problem(f"params.{loc[0]}.default{sep}{rest}", e["msg"])

    # ---------------------------------------------------------------- validators

    def validators(self, raw: Any) -> Any:
        if raw is None:
            return []
        if not isinstance(raw, list):
            self.problem("validators", f"must be a list, not {_kind(raw)}")
            return []
        out: list[dict[str, Any]] = []
        for i, item in enumerate(raw):
            path = f"validators[{i}]"
            if not isinstance(item, dict):
                self.problem(path, f"must be a mapping with a 'kind', not {_kind(item)}")
                continue
            d = {k: item[k] for k in ("kind", "fields") if k in item}
            if isinstance(d.get("fields"), str):
                d["fields"] = [d["fields"]]
            options = item.get("options", {})
            if not isinstance(options, dict):
                self.problem(f"{path}.options", f"must be a mapping, not {_kind(options)}")
                continue
            options = dict(options)
            for k, v in item.items():
                if k in ("kind", "fields", "options"):
                    continue
                if k in options:
                    self.problem(f"{path}.{k}", "given both here and under 'options'")
                options[k] = v
            if d.get("kind") == "custom" and isinstance(options.get("ref"), str):
                options["ref"] = self.custom_ref(options["ref"])
            d["options"] = options
            try:
                spec = ValidatorSpec.model_validate(d)
            except ValidationError as exc:
                for e in exc.errors(include_url=False):
                    self.problem(_join(path, _loc_path(e["loc"])), _msg(e["msg"]))
                continue
            try:
                check_validator_spec(spec)
            except ValueError as exc:
                self.problem(path, str(exc))
                continue
            for j, field in enumerate(spec.fields):
                if field not in self.param_names:
                    self.problem(f"{path}.fields[{j}]", f"unknown parameter {field!r}", graph=True)
            out.append(spec.model_dump())
        return out

    def custom_ref(self, ref: str) -> str:
        target, sep, qualname = ref.rpartition(":")
        if sep and target.endswith(".py"):
            return f"{self.abspath(target)}:{qualname}"
        return ref

    # ---------------------------------------------------------------- steps

    def steps(self, raw: Any) -> Any:
        if not isinstance(raw, list):
            self.problem("steps", f"must be a list of steps, not {_kind(raw)}", graph=True)
            return []
        if not raw:
            self.problem("steps", "a pipeline needs at least one step", graph=True)
        self.step_names = [
            s["name"] for s in raw if isinstance(s, dict) and isinstance(s.get("name"), str)
        ]
        out: list[dict[str, Any]] = []
        seen: set[str] = set()
        for i, item in enumerate(raw):
            path = f"steps[{i}]"
            if not isinstance(item, dict):
                self.problem(path, f"must be a mapping, not {_kind(item)}", graph=True)
                continue
            d = dict(item)
            name = d.get("name")
            if isinstance(name, str):
                if name in seen:
                    self.problem(f"{path}.name", f"step name {name!r} is used twice", graph=True)
                seen.add(name)
            deps: list[str] = []
            if "depends_on" in d:
                deps = self.explicit_deps(d["depends_on"], name, path)
                d["depends_on"] = deps
            if "function" in d and d["function"] is not None:
                d["function"] = self.function(d["function"], f"{path}.function")
            if "inputs" in d:
                if isinstance(d["inputs"], dict):
                    d["inputs"] = {
                        k: self.binding(v, f"{path}.inputs.{k}", name, deps)
                        for k, v in d["inputs"].items()
                    }
                else:
                    self.problem(f"{path}.inputs", f"must be a mapping, not {_kind(d['inputs'])}")
                    del d["inputs"]
            for key in ("command", "args"):
                if isinstance(d.get(key), list):
                    for j, part in enumerate(d[key]):
                        if isinstance(part, str):
                            self.template(part, f"{path}.{key}[{j}]", name, deps)
            if isinstance(d.get("env"), dict):
                d["env"] = {
                    k: str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v
                    for k, v in d["env"].items()
                }
            if deps:
                d["depends_on"] = deps
            out.append(d)
        self.check_cycle(out)
        return out

    def explicit_deps(self, raw: Any, step: Any, path: str) -> list[str]:
        if isinstance(raw, str):
            raw = [raw]
        if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
            self.problem(f"{path}.depends_on", "must be a list of step names")
            return []
        deps: list[str] = []
        for j, dep in enumerate(raw):
            if self.check_step_ref(dep, step, f"{path}.depends_on[{j}]") and dep not in deps:
                deps.append(dep)
        return deps

    def check_step_ref(self, ref: str, step: Any, path: str) -> bool:
        if ref == step:
            self.problem(path, f"step {ref!r} depends on itself", graph=True)
            return False
        if ref not in self.step_names:
            known = ", ".join(self.step_names) or "none"
            self.problem(path, f"unknown step {ref!r} (steps: {known})", graph=True)
            return False
        return True

    def check_param_ref(self, ref: str, path: str) -> bool:
        if ref in self.param_names:
            return True
        known = ", ".join(self.param_names) or "none"
        self.problem(path, f"unknown parameter {ref!r} (params: {known})", graph=True)
        return False

    def function(self, value: Any, path: str) -> Any:
        if isinstance(value, dict):
            d = dict(value)
            if isinstance(d.get("file"), str):
                d["file"] = self.abspath(d["file"])
                self.check_file(d["file"], path)
            return d
        usage = "use 'path/to/file.py:function' or 'package.module:function'"
        if not isinstance(value, str):
            self.problem(path, f"must be a string, not {_kind(value)}: {usage}")
            return _INVALID_FUNCTION
        target, sep, qualname = value.rpartition(":")
        if not sep or not target or not _QUALNAME.fullmatch(qualname):
            self.problem(path, f"invalid function reference {value!r}: {usage}")
            return _INVALID_FUNCTION
        if target.endswith(".py") or "/" in target or "\\" in target:
            file = self.abspath(target)
            self.check_file(file, path)
            return {"file": file, "qualname": qualname}
        if not _QUALNAME.fullmatch(target):
            self.problem(path, f"invalid module name {target!r}: {usage}")
            return _INVALID_FUNCTION
        return {"module": target, "qualname": qualname}

    def abspath(self, target: str) -> str:
        return os.path.abspath(os.path.join(self.base_dir, os.path.expanduser(target)))

    def check_file(self, file: str, path: str) -> None:
        if self.check_files and not os.path.isfile(file):
            self.problem(path, f"file not found: {file}")

    def binding(self, value: Any, path: str, step: Any, deps: list[str]) -> Any:
        """Turn ``${params.x}``/``${steps.y}`` strings into binding references."""
        if isinstance(value, str):
            if value.startswith("$${") and _WHOLE_REF.fullmatch(value[1:]):
                return value[1:]
            match = _WHOLE_REF.fullmatch(value)
            if match:
                kind, ref = match.groups()
                if kind == "params":
                    self.check_param_ref(ref, path)
                    return {"$param": ref}
                if self.check_step_ref(ref, step, path):
                    if ref not in deps:
                        deps.append(ref)
                    return {"$step": ref}
                return value
            if _EMBEDDED_REF.search(value):
                self.problem(
                    path,
                    f"{value!r}: a ${{params...}} or ${{steps...}} reference must be the whole "
                    "value of an input (write $${...} for literal text)",
                    graph=True,
                )
            return value
        if isinstance(value, dict):
            if len(value) == 1 and next(iter(value)) in REF_KEYS:
                return {"$value": value}
            return {k: self.binding(v, f"{path}.{k}", step, deps) for k, v in value.items()}
        if isinstance(value, list):
            return [self.binding(v, f"{path}[{i}]", step, deps) for i, v in enumerate(value)]
        return value

    def template(self, text: str, path: str, step: Any, deps: list[str]) -> None:
        """Check the references of a command template; add referenced steps to ``deps``."""
        for kind, token in _TEMPLATE_REF.findall(text):
            if kind == "params":
                self.check_param_ref(token.split(".")[0], path)
                continue
            # Step names may contain dots, so ``${steps.a.b}`` is step "a.b" if it
            # exists, else field "b" of step "a".
            ref = token
            while ref not in self.step_names and "." in ref:
                ref = ref.rsplit(".", 1)[0]
            known = ref if ref in self.step_names else token
            if self.check_step_ref(known, step, path) and ref not in deps:
                deps.append(ref)

    # ---------------------------------------------------------------- triggers

    def triggers(self, raw: Any) -> Any:
        if raw is None:
            return []
        if not isinstance(raw, list):
            self.problem("triggers", f"must be a list of triggers, not {_kind(raw)}")
            return []
        out: list[Any] = []
        for i, t in enumerate(raw):
            path = f"triggers[{i}]"
            if not isinstance(t, dict):
                self.problem(
                    path, f"must be a mapping (pipeline, state, params), not {_kind(t)}", graph=True
                )
                out.append({"pipeline": "invalid"})  # keeps the indexes of the others
                continue
            d = dict(t)
            if "state" in d:
                if "states" in d:
                    self.problem(path, "give either state or states, not both")
                state = d.pop("state")
                d["states"] = state if isinstance(state, list) else [state]
            params = d.get("params")
            if isinstance(params, dict):
                d["params"] = {
                    k: self.trigger_binding(v, f"{path}.params.{k}") for k, v in params.items()
                }
            out.append(d)
        return out

    def trigger_binding(self, value: Any, path: str) -> Any:
        """Turn ``${trigger.params|steps|run.x}`` strings into trigger references."""
        if isinstance(value, str):
            if value.startswith("$${") and _TRIGGER_REF.fullmatch(value[1:]):
                return value[1:]
            match = _TRIGGER_REF.fullmatch(value)
            if match:
                kind, ref = match.groups()
                return {_TRIGGER_KIND[kind]: ref}  # run fields are checked by TriggerSpec
            if _TRIGGER_EMBEDDED.search(value):
                self.problem(
                    path,
                    f"{value!r}: a ${{trigger...}} reference must be the whole value "
                    "(write $${...} for literal text)",
                )
            return value
        if isinstance(value, dict):
            if len(value) == 1 and next(iter(value)) in (*REF_KEYS, "$run"):
                return {"$value": value}
            return {k: self.trigger_binding(v, f"{path}.{k}") for k, v in value.items()}
        if isinstance(value, list):
            return [self.trigger_binding(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return value

    def check_cycle(self, steps: list[dict[str, Any]]) -> None:
        deps = {
            s["name"]: [d for d in s.get("depends_on", []) if isinstance(d, str)]
            for s in steps
            if isinstance(s.get("name"), str)
        }
        done: set[str] = set()
        progress = True
        while progress:
            progress = False
            for n, ds in deps.items():
                if n not in done and all(d in done or d not in deps for d in ds):
                    done.add(n)
                    progress = True
        stuck = [n for n in deps if n not in done]
        if stuck:
            self.problem("steps", f"dependency cycle between {', '.join(stuck)}", graph=True)

    # ---------------------------------------------------------------- pydantic errors

    def pydantic_problems(self, exc: ValidationError) -> None:
        for e in exc.errors(include_url=False):
            loc = tuple(e["loc"])
            if not loc:
                # The pipeline-level graph check; our own checks are more precise
                # and already reported the same problems when they found any.
                if not self.graph_problems:
                    for part in _msg(e["msg"]).split("; "):
                        self.problem("", part)
                continue
            if (
                loc[0] == "params"
                and len(loc) > 1
                and isinstance(loc[1], int)
                and loc[1] < len(self.param_order)
            ):
                loc = ("params", self.param_order[loc[1]], *loc[2:])
            message = _msg(e["msg"])
            if e["type"] == "extra_forbidden":
                message = "unknown field" + _suggest(loc)
            self.problem(_loc_path(loc), message)


def _msg(msg: str) -> str:
    return msg.removeprefix("Value error, ")


def _join(prefix: str, rest: str) -> str:
    if not rest:
        return prefix
    return f"{prefix}{rest}" if rest.startswith("[") else f"{prefix}.{rest}"


def _loc_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _suggest(loc: tuple[int | str, ...]) -> str:
    model: type[BaseModel] = PipelineSpec
    if len(loc) == 3 and loc[0] == "steps":
        model = StepSpec
    elif len(loc) == 3 and loc[0] == "params":
        model = ParamSpec
    elif len(loc) == 3 and loc[0] == "triggers":
        model = TriggerSpec
    elif len(loc) != 1:
        return ""
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""

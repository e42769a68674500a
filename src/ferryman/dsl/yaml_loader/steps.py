"""The ``steps`` section of a pipeline file: references, dependencies, functions."""

from __future__ import annotations

import re
from typing import Any

from ferryman.domain.secret_names import secret_name_problem
from ferryman.domain.spec import REF_KEYS
from ferryman.dsl.yaml_loader.context import Context, describe

_WHOLE_REF = re.compile(r"\$\{\s*(params|steps)\.([^{}\s]+)\s*\}")
_EMBEDDED_REF = re.compile(r"(?<!\$)\$\{\s*(?:params|steps)\.")
_TEMPLATE_REF = re.compile(r"(?<!\$)\$\{\s*(params|steps)\.([^{}\s]+)\s*\}")
_QUALNAME = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")
_INVALID_FUNCTION = {"module": "invalid", "qualname": "invalid"}


def compile_steps(ctx: Context, raw: Any) -> Any:
    """Step entries as step data: references resolved, dependencies added."""
    if not isinstance(raw, list):
        ctx.problem("steps", f"must be a list of steps, not {describe(raw)}", graph=True)
        return []
    if not raw:
        ctx.problem("steps", "a pipeline needs at least one step", graph=True)
    ctx.step_names = [
        s["name"] for s in raw if isinstance(s, dict) and isinstance(s.get("name"), str)
    ]
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        path = f"steps[{i}]"
        if not isinstance(item, dict):
            ctx.problem(path, f"must be a mapping, not {describe(item)}", graph=True)
            continue
        d = dict(item)
        name = d.get("name")
        if isinstance(name, str):
            if name in seen:
                ctx.problem(f"{path}.name", f"step name {name!r} is used twice", graph=True)
            seen.add(name)
        deps: list[str] = []
        if "depends_on" in d:
            deps = _explicit_deps(ctx, d["depends_on"], name, path)
            d["depends_on"] = deps
        if "function" in d and d["function"] is not None:
            d["function"] = _function(ctx, d["function"], f"{path}.function")
        if "inputs" in d:
            if isinstance(d["inputs"], dict):
                d["inputs"] = {
                    k: _binding(ctx, v, f"{path}.inputs.{k}", name, deps)
                    for k, v in d["inputs"].items()
                }
            else:
                ctx.problem(f"{path}.inputs", f"must be a mapping, not {describe(d['inputs'])}")
                del d["inputs"]
        for key in ("command", "args"):
            if isinstance(d.get(key), list):
                for j, part in enumerate(d[key]):
                    if isinstance(part, str):
                        _template(ctx, part, f"{path}.{key}[{j}]", name, deps)
        if d.get("kind") == "task" and isinstance(d.get("config"), dict):
            _task_config(ctx, d, path, name, deps)
        if isinstance(d.get("env"), dict):
            d["env"] = {
                k: str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v
                for k, v in d["env"].items()
            }
        if isinstance(d.get("secrets"), list):
            for j, secret in enumerate(d["secrets"]):
                problem = secret_name_problem(secret) if isinstance(secret, str) else None
                if problem is not None:
                    ctx.problem(f"{path}.secrets[{j}]", problem)
        if deps:
            d["depends_on"] = deps
        out.append(d)
    _check_cycle(ctx, out)
    return out


def _explicit_deps(ctx: Context, raw: Any, step: Any, path: str) -> list[str]:
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        ctx.problem(f"{path}.depends_on", "must be a list of step names")
        return []
    deps: list[str] = []
    for j, dep in enumerate(raw):
        if ctx.check_step_ref(dep, step, f"{path}.depends_on[{j}]") and dep not in deps:
            deps.append(dep)
    return deps


def _function(ctx: Context, value: Any, path: str) -> Any:
    if isinstance(value, dict):
        d = dict(value)
        if isinstance(d.get("file"), str):
            d["file"] = ctx.abspath(d["file"])
            ctx.check_file(d["file"], path)
        return d
    usage = "use 'path/to/file.py:function' or 'package.module:function'"
    if not isinstance(value, str):
        ctx.problem(path, f"must be a string, not {describe(value)}: {usage}")
        return _INVALID_FUNCTION
    target, sep, qualname = value.rpartition(":")
    if not sep or not target or not _QUALNAME.fullmatch(qualname):
        ctx.problem(path, f"invalid function reference {value!r}: {usage}")
        return _INVALID_FUNCTION
    if target.endswith(".py") or "/" in target or "\\" in target:
        file = ctx.abspath(target)
        ctx.check_file(file, path)
        return {"file": file, "qualname": qualname}
    if not _QUALNAME.fullmatch(target):
        ctx.problem(path, f"invalid module name {target!r}: {usage}")
        return _INVALID_FUNCTION
    return {"module": target, "qualname": qualname}


def _binding(ctx: Context, value: Any, path: str, step: Any, deps: list[str]) -> Any:
    """Turn ``${params.x}``/``${steps.y}`` strings into binding references."""
    if isinstance(value, str):
        if value.startswith("$${") and _WHOLE_REF.fullmatch(value[1:]):
            return value[1:]
        match = _WHOLE_REF.fullmatch(value)
        if match:
            kind, ref = match.groups()
            if kind == "params":
                ctx.check_param_ref(ref, path)
                return {"$param": ref}
            if ctx.check_step_ref(ref, step, path):
                if ref not in deps:
                    deps.append(ref)
                return {"$step": ref}
            return value
        if _EMBEDDED_REF.search(value):
            ctx.problem(
                path,
                f"{value!r}: a ${{params...}} or ${{steps...}} reference must be the whole "
                "value of an input (write $${...} for literal text)",
                graph=True,
            )
        return value
    if isinstance(value, dict):
        if len(value) == 1 and next(iter(value)) in REF_KEYS:
            return {"$value": value}
        return {k: _binding(ctx, v, f"{path}.{k}", step, deps) for k, v in value.items()}
    if isinstance(value, list):
        return [_binding(ctx, v, f"{path}[{i}]", step, deps) for i, v in enumerate(value)]
    return value


def _template(ctx: Context, text: str, path: str, step: Any, deps: list[str]) -> None:
    """Check the references of a command template; add referenced steps to ``deps``."""
    for kind, token in _TEMPLATE_REF.findall(text):
        if kind == "params":
            ctx.check_param_ref(token.split(".")[0], path)
            continue
        # Step names may contain dots, so ``${steps.a.b}`` is step "a.b" if it
        # exists, else field "b" of step "a".
        ref = token
        while ref not in ctx.step_names and "." in ref:
            ref = ref.rsplit(".", 1)[0]
        known = ref if ref in ctx.step_names else token
        if ctx.check_step_ref(known, step, path) and ref not in deps:
            deps.append(ref)


def _task_config(ctx: Context, d: dict[str, Any], path: str, step: Any, deps: list[str]) -> None:
    """Check the references of a task step's config templates; a step output
    referred to (``${steps.NAME}``) becomes an input of the same name, which is
    where the template takes it from when the step runs."""

    def walk(value: Any, where: str) -> None:
        if isinstance(value, str):
            before = list(deps)
            _template(ctx, value, where, step, deps)
            for ref in deps[len(before) :]:
                inputs = d.setdefault("inputs", {})
                if isinstance(inputs, dict):
                    inputs.setdefault(ref, {"$step": ref})
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{where}.{k}")
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{where}[{i}]")

    walk(d["config"], f"{path}.config")


def _check_cycle(ctx: Context, steps: list[dict[str, Any]]) -> None:
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
        ctx.problem("steps", f"dependency cycle between {', '.join(stuck)}", graph=True)

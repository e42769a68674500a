"""``ferryman deploy`` and ``ferryman pipelines``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from ferryman.cli.common import clean_errors, console, fail, open_store, table

if TYPE_CHECKING:
    from ferryman.domain.spec import PipelineSpec

app = typer.Typer(help="Registered pipelines.", no_args_is_help=True)


def specs_in(path: Path) -> list[object]:
    """Every pipeline spec a file defines."""
    from ferryman.dsl.decorators import pipelines_in
    from ferryman.dsl.loader import load_pipeline, load_python_file

    if not path.exists():
        fail(f"no such file: {path}")
    if path.suffix == ".py":
        return [p.spec() for p in pipelines_in(load_python_file(path))]
    return [load_pipeline(str(path))]


def deploy_command(
    file: Path = typer.Argument(..., help="Pipeline file (.py, .yaml, .yml, .json)"),
    namespace: str = typer.Option("default", "--namespace", "-n"),
    server: str = typer.Option(
        None, "--server", envvar="FERRYMAN_SERVER", help="Register on this ferryman server"
    ),
) -> None:
    """Register the pipelines a file defines (a new version only when changed)."""
    with clean_errors():
        from ferryman.domain.spec import PipelineSpec
        from ferryman.infra.registry import kind_problems
        from ferryman.services.catalog import register

        specs = specs_in(file)
        if not specs:
            fail(f"{file} defines no pipeline")
        for spec in specs:
            assert isinstance(spec, PipelineSpec)
            problems = kind_problems(spec)
            if problems:
                fail(f"pipeline {spec.name!r}: " + "; ".join(why for _, why in problems))
        if server:
            from ferryman.cli import remote

            try:
                remote.deploy(server, namespace, specs)
            except Exception as exc:
                remote.api_errors(exc)
            return
        store = open_store()
        with store.write() as conn:
            for spec in specs:
                assert isinstance(spec, PipelineSpec)
                pv = register(conn, namespace, spec)
                what = "new version" if pv.created else "unchanged"
                console.print(f"{namespace}/{pv.name}: version {pv.version} ({what})")
                for warning in pv.warnings:
                    console.print(f"[yellow]warning:[/] {warning}")


@app.command("ls")
def ls(namespace: str = typer.Option(None, "--namespace", "-n")) -> None:
    """List registered pipelines."""
    with clean_errors():
        from ferryman.services.catalog import list_pipelines

        store = open_store()
        with store.read() as conn:
            rows = list_pipelines(conn, namespace)
        t = table("namespace", "name", "latest version", "versions", "updated")
        for r in rows:
            t.add_row(
                r["namespace"],
                r["name"],
                r["latest_version"],
                str(r["versions"]),
                f"{r['updated_at']:%Y-%m-%d %H:%M:%S}",
            )
        console.print(t)


@app.command("describe")
def describe(name: str, namespace: str = typer.Option("default", "--namespace", "-n")) -> None:
    """Show a pipeline's parameters (types, defaults), steps and event triggers."""
    with clean_errors():
        from ferryman.services.catalog import latest

        store = open_store()
        with store.read() as conn:
            pv = latest(conn, namespace, name)
        spec = pv.spec
        console.print(f"[bold]{namespace}/{spec.name}[/] version {pv.version}")
        if spec.description:
            console.print(spec.description)
        t = table("parameter", "type", "required", "default", "description")
        for p in spec.params:
            t.add_row(
                p.name,
                p.type,
                "yes" if p.required else "no",
                "" if p.required else repr(p.default),
                p.description,
            )
        console.print(t)
        s = table("step", "kind", "depends on", "infrastructure", "retries", "timeout")
        for st in spec.steps:
            s.add_row(
                st.name,
                st.kind,
                ", ".join(st.depends_on),
                st.infrastructure or spec.infrastructure,
                str(st.retries),
                f"{st.timeout:g}s" if st.timeout else "",
            )
        console.print(s)
        print_triggers(namespace, spec)


def print_triggers(namespace: str, spec: PipelineSpec) -> None:
    """The pipeline's event triggers: which runs start it and with what params."""
    from ferryman.services.triggers import triggers_of

    if not spec.triggers:
        return
    t = table("runs when", "in state", "params", "labels")
    for tr in triggers_of(namespace, spec):
        mapping = ", ".join(f"{k} = {show_expr(v)}" for k, v in tr["params"].items())
        labels = ", ".join(f"{k}={v}" for k, v in tr["labels"].items())
        if tr["inherit_labels"]:
            labels = "inherited" + (f" + {labels}" if labels else "")
        t.add_row(f"{tr['namespace']}/{tr['pipeline']}", " | ".join(tr["states"]), mapping, labels)
    console.print(t)


def show_expr(value: Any) -> str:
    """A trigger mapping expression as the YAML form users write."""
    if isinstance(value, dict) and len(value) == 1:
        ((k, inner),) = value.items()
        kind = {"$param": "params", "$step": "steps", "$run": "run"}.get(k)
        if kind:
            return f"${{trigger.{kind}.{inner}}}"
        if k == "$value":
            return json.dumps(inner)
    return json.dumps(value, default=str)

"""``ferryman deploy`` and ``ferryman pipelines``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from ferryman.cli.common import clean_errors, console, escape, fail, open_store, table
from ferryman.cli.readers import reader
from ferryman.cli.render import print_json

if TYPE_CHECKING:
    from ferryman.api.schemas import PipelineDetail

app = typer.Typer(help="Registered pipelines.", no_args_is_help=True)


def specs_in(path: Path) -> list[object]:
    """Every pipeline spec a file defines."""
    from ferryman.dsl.decorators import pipelines_in
    from ferryman.dsl.loader import load_pipeline, load_python_file, missing_file

    if not path.exists():
        fail(missing_file(str(path)))
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
        from ferryman.services.schedules import reconcile as reconcile_schedules
        from ferryman.store.engine import SCHEDULE_CHANNEL

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
                done = reconcile_schedules(conn, namespace, spec.name, spec.schedules)
                for verb, names in done.items():
                    for name in names:
                        console.print(f"  schedule {name}: {verb}")
                if any(done.values()):
                    store.notify(conn, SCHEDULE_CHANNEL)
                for warning in pv.warnings:
                    console.print(f"[yellow]warning:[/] {warning}")


SERVER = typer.Option(
    None, "--server", envvar="FERRYMAN_SERVER", help="Ask this ferryman server instead"
)
JSON = typer.Option(False, "--json", help="Print JSON (the REST API's fields) instead")


@app.command("ls")
def ls(
    namespace: str = typer.Option(None, "--namespace", "-n", help="Only this namespace"),
    as_json: bool = JSON,
    server: str = SERVER,
) -> None:
    """List registered pipelines."""
    with clean_errors(), reader(server) as r:
        rows = r.list_pipelines(namespace)
        if as_json:
            print_json(rows)
            return
        t = table("namespace", "name", "latest version", "versions", "updated")
        for p in rows:
            t.add_row(
                escape(p.namespace),
                escape(p.name),
                p.latest_version,
                str(p.versions),
                f"{p.updated_at:%Y-%m-%d %H:%M:%S}",
            )
        console.print(t)


@app.command("describe")
def describe(
    name: str,
    namespace: str = typer.Option("default", "--namespace", "-n"),
    as_json: bool = JSON,
    server: str = SERVER,
) -> None:
    """Show a pipeline's parameters (types, defaults), steps and event triggers."""
    with clean_errors(), reader(server) as r:
        detail = r.get_pipeline(namespace, name)
        if as_json:
            print_json(detail)
            return
        show_pipeline(detail)


def show_pipeline(d: PipelineDetail) -> None:
    """A pipeline version: description, parameters, steps and triggers."""
    console.print(f"[bold]{escape(d.namespace)}/{escape(d.name)}[/] version {d.version}")
    if d.description:
        console.print(escape(d.description))
    t = table("parameter", "type", "required", "default", "description")
    for p in d.params:
        ptype = p.type + (f" of {p.items}" if p.items else "")
        if p.enum:
            ptype += " (" + " | ".join(json.dumps(v) for v in p.enum) + ")"
        t.add_row(
            escape(p.name),
            escape(ptype),
            "yes" if p.required else "no",
            "" if p.required else escape(json.dumps(p.default)),
            escape(p.description),
        )
    console.print(t)
    s = table("step", "kind", "depends on", "infrastructure", "retries", "timeout")
    for st in d.steps:
        s.add_row(
            escape(st.name),
            st.kind,
            escape(", ".join(st.depends_on)),
            escape(st.infrastructure or d.infrastructure),
            str(st.retries),
            f"{st.timeout:g}s" if st.timeout else "",
        )
    console.print(s)
    print_triggers(d)


@app.command("versions")
def versions(
    name: str,
    namespace: str = typer.Option("default", "--namespace", "-n"),
    as_json: bool = JSON,
    server: str = SERVER,
) -> None:
    """List the stored versions of a pipeline, newest first."""
    with clean_errors(), reader(server) as r:
        rows = r.list_versions(namespace, name)
        if as_json:
            print_json(rows)
            return
        t = table("version", "registered")
        for v in rows:
            t.add_row(v.version, f"{v.created_at:%Y-%m-%d %H:%M:%S}")
        console.print(t)


def print_triggers(d: PipelineDetail) -> None:
    """The pipeline's event triggers: which runs start it and with what params."""
    if not d.triggers:
        return
    t = table("runs when", "in state", "params", "labels")
    for tr in d.triggers:
        mapping = ", ".join(f"{k} = {show_expr(v)}" for k, v in tr.params.items())
        labels = ", ".join(f"{k}={v}" for k, v in tr.labels.items())
        if tr.inherit_labels:
            labels = "inherited" + (f" + {labels}" if labels else "")
        t.add_row(
            escape(f"{tr.namespace}/{tr.pipeline}"),
            " | ".join(tr.states),
            escape(mapping),
            escape(labels),
        )
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

"""``ferryman preview``: print exactly what each step would launch."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ferryman.cli.common import (
    clean_errors,
    console,
    fail,
    parse_params,
    settings,
    type_params,
    with_param_hints,
)


def preview_command(
    ref: str = typer.Argument(
        ..., help="FILE.py[:PIPELINE], FILE.yaml, or the name of a deployed pipeline"
    ),
    step: str = typer.Option(None, "--step", "-s", help="Only this step"),
    param: list[str] = typer.Option(None, "--param", "-p", help="name=value (JSON values ok)"),
    params_file: Path = typer.Option(None, "--params-file", help="JSON or YAML file of params"),
    namespace: str = typer.Option("default", "--namespace", "-n"),
    infrastructure: str = typer.Option(None, "--infrastructure", help="Override for every step"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of YAML"),
    server: str = typer.Option(
        None,
        "--server",
        envvar="FERRYMAN_SERVER",
        help="Set: a deployed pipeline's name is refused (preview its file)",
    ),
) -> None:
    """Print what each step would launch — the process command line, the Docker
    container settings, the Kubernetes Job manifest — with secret values masked.
    Nothing is started and nothing is written."""
    with clean_errors():
        import yaml

        from ferryman.cli.common import looks_like_file
        from ferryman.domain.params import ParamsInvalid, validate_params
        from ferryman.dsl.loader import load_pipeline
        from ferryman.infra.preview import preview_pipeline
        from ferryman.infra.registry import InfraPool

        s = settings()
        if looks_like_file(ref):
            spec = load_pipeline(ref)
        elif server:
            # The server keeps step definitions to itself; reading the local
            # database instead would preview something else without a word.
            fail(
                f"cannot preview {ref!r} as deployed on {server}: the server does not "
                "hand out step definitions; preview the pipeline's file instead"
            )
        else:
            from ferryman.cli.common import open_store
            from ferryman.services.catalog import latest

            store = open_store(s)
            try:
                with store.read() as conn:
                    spec = latest(conn, namespace, ref).spec
            finally:
                store.dispose()
        typed, hints = type_params(parse_params(param, params_file), spec)
        try:
            params = validate_params(spec, typed)
        except ParamsInvalid as exc:
            raise with_param_hints(exc, hints) from None
        pool = InfraPool(s.worker.infra_config)
        try:
            previews = preview_pipeline(
                spec,
                params,
                namespace=namespace,
                step=step,
                infrastructure=infrastructure,
                pool=pool,
            )
        finally:
            pool.close()
        if as_json:
            doc = [
                {"step": p.step, "infrastructure": p.infrastructure, "launch": p.launch}
                for p in previews
            ]
            typer.echo(json.dumps(doc, indent=2, default=str))
            return
        for p in previews:
            typer.echo(f"--- # step {p.step} on {p.infrastructure}")
            typer.echo(yaml.safe_dump(p.launch, sort_keys=False, default_flow_style=False).rstrip())
        if not previews:
            console.print("nothing to preview")

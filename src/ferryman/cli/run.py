"""``ferryman run``: start a run and (embedded) execute it in this process."""

from __future__ import annotations

from pathlib import Path

import typer

from ferryman.cli.common import (
    clean_errors,
    console,
    escape,
    open_store,
    parse_params,
    settings,
    setup_logging,
    type_params,
    with_param_hints,
)

# (run_command and _run_on_server call them by these names)
from ferryman.cli.common import looks_like_file as _looks_like_file
from ferryman.cli.embedded import execute_embedded as _execute_embedded


def run_command(
    ref: str = typer.Argument(
        ..., help="FILE.py[:PIPELINE], FILE.yaml, or the name of a deployed pipeline"
    ),
    param: list[str] = typer.Option(None, "--param", "-p", help="name=value (JSON values ok)"),
    params_file: Path = typer.Option(None, "--params-file", help="JSON or YAML file of params"),
    namespace: str = typer.Option("default", "--namespace", "-n"),
    watch: bool = typer.Option(False, "--watch", "-w", help="Show live per-step progress"),
    label: list[str] = typer.Option(None, "--label", "-l", help="key=value label"),
    infrastructure: str = typer.Option(None, "--infrastructure", help="Override for every step"),
    idempotency_key: str = typer.Option(None, "--idempotency-key"),
    timeout: float = typer.Option(None, "--timeout", min=0.001, help="Run timeout (seconds)"),
    server: str = typer.Option(
        None, "--server", envvar="FERRYMAN_SERVER", help="Start the run on this ferryman server"
    ),
    wait: bool = typer.Option(False, "--wait", help="With --server: wait for the run to end"),
) -> None:
    """Run a pipeline on the embedded engine and wait for it to end, or start it
    on a server with --server (add --watch or --wait to follow it there).

    Exit code: 0 succeeded, 1 failed or cancelled, 2 bad input, 130 interrupted.
    """
    setup_logging()
    if server:
        raise typer.Exit(_run_on_server(server, ref, param, params_file, namespace, watch, wait,
                                        label, idempotency_key, timeout))  # fmt: skip
    with clean_errors():
        from ferryman.domain.options import RunOptions
        from ferryman.domain.params import ParamsInvalid, validate_params
        from ferryman.dsl.loader import load_pipeline
        from ferryman.services.catalog import latest, register
        from ferryman.services.runs import RunService

        raw = parse_params(param, params_file)
        labels = _labels(label)
        s = settings()
        spec = load_pipeline(ref) if _looks_like_file(ref) else None
        hints: dict[str, str] = {}
        try:
            if spec is not None:
                params, hints = type_params(raw, spec)
                validate_params(spec, params)  # before touching the database
            store = open_store(s)
            with store.write() as conn:
                pv = (
                    register(conn, namespace, spec)
                    if spec is not None
                    else latest(conn, namespace, ref)
                )
            if spec is None:
                params, hints = type_params(raw, pv.spec)
            if infrastructure:
                from ferryman.infra.registry import infrastructure_class

                infrastructure_class(infrastructure)
            options = RunOptions(infrastructure=infrastructure or None, timeout=timeout or None)
            svc = RunService(store, trigger_max_depth=s.worker.trigger_max_depth)
            started = svc.start_version(
                pv, params, options=options, labels=labels, idempotency_key=idempotency_key
            )
        except ParamsInvalid as exc:
            raise with_param_hints(exc, hints) from None
        run_id = started.id
        if not started.created:
            console.print(f"run {run_id} already exists for this idempotency key")
        console.print(
            f"run [bold]{run_id}[/] ({escape(started.record['name'])}) of "
            f"{namespace}/{pv.name} (version {pv.version})"
        )
        code = _execute_embedded(store, s, svc, run_id, watch)
    raise typer.Exit(code)


def _labels(items: list[str] | None) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in items or []:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise ValueError(f"label {item!r} must look like key=value")
        labels[k] = v
    return labels


def _run_on_server(
    server: str, ref: str, param: list[str] | None, params_file: Path | None, namespace: str,
    watch: bool, wait: bool, label: list[str] | None, key: str | None, timeout: float | None,
) -> int:  # fmt: skip
    from ferryman.cli import remote

    code = 0
    with clean_errors():
        params = parse_params(param, params_file)
        labels = _labels(label)
        spec = None
        if _looks_like_file(ref):
            from ferryman.dsl.loader import load_pipeline

            spec = load_pipeline(ref)
        try:
            code = remote.run_remote(
                server, namespace, ref if spec is None else spec.name, params, spec=spec,
                labels=labels, idempotency_key=key, timeout=timeout, watch=watch, wait=wait,
            )  # fmt: skip
        except Exception as exc:
            remote.api_errors(exc)
    return code

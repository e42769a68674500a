"""``ferryman export cronjob``: a schedule as a Kubernetes CronJob manifest
(``infra/kubernetes/cronjob.py`` says how each policy maps)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ferryman.cli.common import clean_errors, console, err_console, escape, fail

app = typer.Typer(help="Export ferryman objects for other systems.", no_args_is_help=True)


def _pipeline(ref: str, namespace: str, name: str, server: str | None) -> Any:
    """The pipeline's spec: the file ``ref`` names when it is here, else the
    newest deployed version (local database only: the API does not return
    the steps' declared secrets)."""
    from ferryman.cli.common import looks_like_file
    from ferryman.dsl.loader import load_pipeline

    target = ref.partition(":")[0]
    if looks_like_file(ref) and Path(target).exists():
        return load_pipeline(ref)
    if server:
        fail(f"--ref {ref!r} is not a file here: with --server, give the pipeline file as --ref "
             "(its declared secrets become the CronJob's secretKeyRefs)")  # fmt: skip
    from ferryman.cli.common import open_store
    from ferryman.services.catalog import latest

    with open_store().read() as conn:
        return latest(conn, namespace, name).spec


@app.command("cronjob")
def cronjob(
    schedule: str = typer.Argument(..., help="The schedule's name"),
    image: str = typer.Option(..., "--image", help="An image with ferryman and the pipeline"),
    ref: str = typer.Option(
        None, "--ref", help="What `ferryman run` runs in the image (default: the pipeline's name)"
    ),
    output: Path = typer.Option(None, "-o", "--output", help="Write here (default: stdout)"),
    namespace: str = typer.Option("default", "--namespace", "-n", help="ferryman namespace"),
    k8s_namespace: str = typer.Option(None, "--k8s-namespace", help="Kubernetes namespace"),
    secret_name: str = typer.Option(None, "--secret-name", help="Secret with the secrets"),
    active_deadline: int = typer.Option(
        None, "--active-deadline", min=1, help="Seconds a run may take (default: its timeout)"
    ),
    backoff_limit: int = typer.Option(0, "--backoff-limit", min=0, max=100),
    ttl: int = typer.Option(86400, "--ttl", min=0, help="Seconds a finished Job is kept"),
    service_account: str = typer.Option(None, "--service-account"),
    server: str = typer.Option(
        None, "--server", envvar="FERRYMAN_SERVER", help="Read the schedule from this server"
    ),
) -> None:
    """Write the schedule as a batch/v1 CronJob whose container runs the
    pipeline once and exits with the run's result."""
    import yaml

    from ferryman.cli.schedules import backend
    from ferryman.domain.schedules import ScheduleSpec
    from ferryman.infra.kubernetes.cronjob import CronJobOptions, cronjob_manifest

    with backend(server) as b:
        stored = b.get(namespace, schedule)
    with clean_errors():
        spec = ScheduleSpec.model_validate(
            stored.model_dump(include=set(ScheduleSpec.model_fields))
        )
        pipeline = _pipeline(ref or spec.pipeline, namespace, spec.pipeline, server)
        opts = CronJobOptions(
            image=image, ref=ref or spec.pipeline, namespace=k8s_namespace,
            secret_name=secret_name, backoff_limit=backoff_limit,
            active_deadline=active_deadline, ttl_seconds=ttl, service_account=service_account,
        )  # fmt: skip
        manifest, warnings = cronjob_manifest(spec, pipeline, opts)
        text = yaml.safe_dump(manifest, sort_keys=False)
        for w in warnings:
            err_console.print(f"[yellow]warning:[/] {escape(w)}")
        if output is None:
            typer.echo(text, nl=False)
            return
        try:
            output.write_text(text)
        except OSError as exc:
            fail(f"cannot write {output}: {exc.strerror or exc}")
        console.print(f"wrote CronJob {manifest['metadata']['name']} to {output}")

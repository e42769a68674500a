"""A schedule as a Kubernetes ``batch/v1`` CronJob (``ferryman export cronjob``).

The CronJob's container runs ``ferryman run REF`` with the schedule's
parameters: the embedded engine runs the pipeline to its end and the process
exits with the run's result (0 succeeded, 1 failed, 2 bad input), so every
Job completes and the next tick is never blocked by a container that stays
up. How the schedule's policies map:

=====================  ==========================================================
ferryman               CronJob
=====================  ==========================================================
cron + timezone        ``schedule`` + ``timeZone`` (5 fields; seconds refused)
interval               ``*/m * * * *`` or ``0 */h * * *`` in UTC when it divides
                       an hour or a day; refused otherwise
overlap                allow → ``Allow``, skip → ``Forbid``, cancel_other →
                       ``Replace``; buffer_one/buffer_all → ``Forbid`` (warned)
catch-up               none → ``startingDeadlineSeconds: 60``; latest/all →
                       the catch-up window (Kubernetes runs one missed tick at
                       most: ``all`` is warned). A deadline also keeps the
                       controller from giving up after 100 missed ticks
paused                 ``suspend``
secrets                ``env`` from ``secretKeyRef`` (never values)
=====================  ==========================================================

``lint_cronjob`` is the built-in check every export passes: a command that
keeps running (``sleep infinity``, ``tail -f``, a server), a missing
``activeDeadlineSeconds``, a restart policy other than ``Never``, an inline
secret value or a name longer than 52 characters is refused.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from ferryman.domain.schedules import CatchUp, Overlap, ScheduleSpec
from ferryman.domain.spec import PipelineSpec
from ferryman.infra.kubernetes.names import label_value

#: CronJob names: the controller appends 11 characters to name its Jobs.
MAX_NAME = 52
_CONCURRENCY = {
    Overlap.ALLOW: "Allow",
    Overlap.SKIP: "Forbid",
    Overlap.CANCEL_OTHER: "Replace",
    Overlap.BUFFER_ONE: "Forbid",
    Overlap.BUFFER_ALL: "Forbid",
}
_KEEP_ALIVE = (
    re.compile(r"\bsleep\s+(infinity|inf\b|\d{5,})"),
    re.compile(r"\btail\s+-[a-zA-Z]*f"),
    re.compile(r"\bwhile\s+(true|:)"),
    re.compile(r"\bferryman\s+(server|worker|scheduler)\b"),
)
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


class ExportError(ValueError):
    """A schedule that cannot be exported as asked (said in one line)."""


@dataclass(frozen=True)
class CronJobOptions:
    """What the export needs besides the schedule and its pipeline."""

    image: str
    ref: str  # what ``ferryman run`` runs in the image: FILE.py:PIPE, FILE.yaml or a module
    namespace: str | None = None  # the Kubernetes namespace
    secret_name: str | None = None  # the Secret holding the declared secrets
    backoff_limit: int = 0  # step retries are ferryman's; a failed run is final
    active_deadline: int | None = None  # default: the pipeline's timeout
    ttl_seconds: int = 86400
    history: int = 3
    service_account: str | None = None


def cronjob_name(text: str) -> str:
    """A DNS-1123 name of at most 52 characters (a hash keeps long names apart)."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "schedule"
    if len(slug) <= MAX_NAME:
        return slug
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return slug[: MAX_NAME - 9].rstrip("-") + "-" + digest


def kubernetes_schedule(spec: ScheduleSpec) -> tuple[str, str]:
    """The CronJob's ``schedule`` and ``timeZone``; ``ExportError`` if none fits."""
    if spec.cron is not None:
        if len(spec.cron.split()) != 5:
            raise ExportError(
                f"schedule {spec.name!r}: Kubernetes cron has no seconds field ({spec.cron!r})"
            )
        return spec.cron, spec.timezone
    assert spec.interval is not None
    seconds = spec.interval
    if spec.start_at is not None or seconds % 60:
        raise ExportError(
            f"schedule {spec.name!r}: every {seconds:g}s cannot be written as Kubernetes cron "
            "(use whole minutes that divide an hour, or hours that divide a day)"
        )
    minutes = int(seconds // 60)
    if minutes < 60 and 60 % minutes == 0:
        return f"*/{minutes} * * * *", "Etc/UTC"
    if minutes % 60 == 0 and 24 % (hours := minutes // 60) == 0:
        return ("0 0 * * *" if hours == 24 else f"0 */{hours} * * *"), "Etc/UTC"
    raise ExportError(
        f"schedule {spec.name!r}: every {seconds:g}s cannot be written as Kubernetes cron "
        "(use whole minutes that divide an hour, or hours that divide a day)"
    )


def _param_args(params: dict[str, Any]) -> list[str]:
    args: list[str] = []
    for key, value in sorted(params.items()):
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        if isinstance(value, str) and value.startswith("@"):
            text = "@" + value  # a literal "@", not a file
        args += ["-p", f"{key}={text}"]
    return args


def cronjob_manifest(
    schedule: ScheduleSpec, pipeline: PipelineSpec, opts: CronJobOptions
) -> tuple[dict[str, Any], list[str]]:
    """The CronJob of ``schedule`` and the warnings (what Kubernetes cannot do)."""
    warnings: list[str] = []
    cron, zone = kubernetes_schedule(schedule)
    if schedule.overlap in (Overlap.BUFFER_ONE, Overlap.BUFFER_ALL):
        warnings.append(f"overlap {schedule.overlap.value!r}: Kubernetes cannot buffer ticks; "
                        "a tick during a run is skipped (Forbid)")  # fmt: skip
    if schedule.catchup == CatchUp.ALL:
        warnings.append("catchup 'all': Kubernetes starts at most one missed tick")
    if schedule.jitter:
        warnings.append("jitter: Kubernetes has none; runs start on the tick")
    if schedule.end_at is not None:
        warnings.append("end_at: Kubernetes has no end date; delete the CronJob then")
    deadline = opts.active_deadline or (int(pipeline.timeout) if pipeline.timeout else None)
    if deadline is None:
        raise ExportError(
            f"pipeline {pipeline.name!r} has no timeout: give --active-deadline SECONDS "
            "(a Job without a deadline can run forever and block every later tick)"
        )
    starting = 60 if schedule.catchup == CatchUp.NONE else max(int(schedule.catchup_window), 10)
    name = cronjob_name(schedule.name)
    secret_name = opts.secret_name or cronjob_name(f"{schedule.name}-secrets")
    secrets = sorted({s for step in pipeline.steps for s in step.secrets})
    for s in secrets:
        if not _SECRET_KEY.match(s):
            raise ExportError(f"secret {s!r} is not a valid Secret key")
    env: list[dict[str, Any]] = [
        {"name": "FERRYMAN_HOME", "value": "/tmp/ferryman"},  # the run's own state
    ]
    env += [
        {"name": s, "valueFrom": {"secretKeyRef": {"name": secret_name, "key": s}}} for s in secrets
    ]
    labels = {
        "app.kubernetes.io/managed-by": "ferryman",
        "ferryman.io/schedule": label_value(schedule.name),
        "ferryman.io/pipeline": label_value(pipeline.name),
    }
    container: dict[str, Any] = {
        "name": "run",
        "image": opts.image,
        "command": ["ferryman", "run", opts.ref, *_param_args(schedule.params)],
        "env": env,
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {}}],
    }
    if opts.service_account:
        pod_spec["serviceAccountName"] = opts.service_account
    metadata: dict[str, Any] = {"name": name, "labels": labels}
    if opts.namespace:
        metadata["namespace"] = opts.namespace
    manifest: dict[str, Any] = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": metadata,
        "spec": {
            "schedule": cron,
            "timeZone": zone,
            "concurrencyPolicy": _CONCURRENCY[schedule.overlap],
            "startingDeadlineSeconds": starting,
            "suspend": schedule.paused,
            "successfulJobsHistoryLimit": opts.history,
            "failedJobsHistoryLimit": opts.history,
            "jobTemplate": {
                "metadata": {"labels": labels},
                "spec": {
                    "backoffLimit": opts.backoff_limit,
                    "activeDeadlineSeconds": deadline,
                    "ttlSecondsAfterFinished": opts.ttl_seconds,
                    "template": {"metadata": {"labels": labels}, "spec": pod_spec},
                },
            },
        },
    }
    problems = lint_cronjob(manifest, secrets)
    if problems:
        raise ExportError("the CronJob would not be safe: " + "; ".join(problems))
    return manifest, warnings


def lint_cronjob(manifest: dict[str, Any], secrets: list[str] | None = None) -> list[str]:
    """What makes a CronJob unsafe to run on a schedule (empty: nothing)."""
    problems: list[str] = []
    name = str(manifest.get("metadata", {}).get("name", ""))
    if not name or len(name) > MAX_NAME or not re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", name):
        problems.append(f"metadata.name {name!r} is not a DNS-1123 name of at most {MAX_NAME}")
    spec = manifest.get("spec", {})
    if spec.get("startingDeadlineSeconds") is None:
        problems.append("spec.startingDeadlineSeconds is missing (the controller gives up "
                        "after 100 missed ticks without it)")  # fmt: skip
    job = spec.get("jobTemplate", {}).get("spec", {})
    if not job.get("activeDeadlineSeconds"):
        problems.append("jobTemplate.spec.activeDeadlineSeconds is missing")
    if job.get("ttlSecondsAfterFinished") is None:
        problems.append("jobTemplate.spec.ttlSecondsAfterFinished is missing")
    pod = job.get("template", {}).get("spec", {})
    if pod.get("restartPolicy") != "Never":
        problems.append("the pod's restartPolicy must be Never (a failed run is final)")
    for c in pod.get("containers", []):
        words = " ".join([*c.get("command", []), *c.get("args", [])])
        for pattern in _KEEP_ALIVE:
            if pattern.search(words):
                problems.append(f"container {c.get('name')!r} keeps running ({pattern.pattern})")
        for e in c.get("env", []):
            if e.get("name") in (secrets or []) and "value" in e:
                problems.append(f"secret {e['name']!r} is given inline: use a secretKeyRef")
    return problems

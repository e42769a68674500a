"""The CLI against a ferryman server (``--server URL``), through ``ferryman.client``.

The token comes from ``FERRYMAN_TOKEN`` (an API token or a JWT) or from
``ferryman login``, which keeps one JWT per server in
``FERRYMAN_HOME/credentials.json`` (mode 0600).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import typer

from ferryman.cli.common import EXIT_FAILED, console, escape, fail, settings
from ferryman.cli.render import fmt_duration, print_log_line, styled

CREDENTIALS = "credentials.json"


def _credentials_path() -> Path:
    return settings().home / CREDENTIALS


def saved_token(server: str) -> str | None:
    path = _credentials_path()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    token = data.get(server.rstrip("/"))
    return token if isinstance(token, str) else None


def save_token(server: str, token: str) -> Path:
    path = _credentials_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    data[server.rstrip("/")] = token
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    os.chmod(path, 0o600)
    return path


def client(server: str) -> Any:
    from ferryman.client import Client

    token = os.environ.get("FERRYMAN_TOKEN") or saved_token(server)
    if not token:
        fail(f"not logged in to {server}: run `ferryman login --server {server}` "
             "or set FERRYMAN_TOKEN")  # fmt: skip
    return Client(server, token=token)


def api_errors(exc: Exception) -> None:
    """Render a client error cleanly and exit."""
    from ferryman.client import ApiError

    if isinstance(exc, ApiError):
        if exc.code in ("invalid_params", "invalid") and isinstance(exc.details, list):
            console.print(f"[bold red]error:[/] {escape(exc.message)}", style=None)
            for d in exc.details:
                if isinstance(d, dict):
                    console.print(f"  - [bold]{escape(str(d.get('path') or '(params)'))}[/]: "
                                  f"{escape(str(d.get('reason')))}")  # fmt: skip
            raise typer.Exit(2)
        fail(f"{exc.message} (HTTP {exc.status})", 2 if exc.status < 500 else EXIT_FAILED)
    import httpx

    if isinstance(exc, httpx.HTTPError):
        fail(f"cannot reach the server: {exc}", EXIT_FAILED)
    raise exc


def login(server: str, username: str, password: str) -> None:
    from ferryman.client import Client

    with Client(server) as c:
        token = c.login(username, password)
    path = save_token(server, token)
    console.print(f"logged in to {server} as {username} (token saved in {path})")


def run_remote(
    server: str,
    namespace: str,
    name: str,
    params: dict[str, Any],
    *,
    spec: Any = None,
    labels: dict[str, str],
    idempotency_key: str | None,
    timeout: float | None,
    watch: bool,
    wait: bool,
) -> int:
    from ferryman.cli.common import type_params

    with client(server) as c:
        if spec is not None:
            reg = c.register_pipeline(namespace, spec.model_dump(mode="json"))
            name = reg.name
            params = type_params(params, spec)
        else:
            detail = c.get_pipeline(namespace, name)
            props = detail.params_schema.get("properties", {})
            params = _type_remote(params, props)
        run = c.create_run(
            namespace, name, params=params, labels=labels or None,
            idempotency_key=idempotency_key, timeout=timeout,
        )  # fmt: skip
        console.print(f"run [bold]{run.id}[/] of {namespace}/{name} (version {run.version}) "
                      f"on {server}")  # fmt: skip
        if not (watch or wait):
            return 0
        return follow_remote(c, run.id, watch)


def _type_remote(params: dict[str, Any], props: dict[str, Any]) -> dict[str, Any]:
    from ferryman.cli.common import RawParam

    out: dict[str, Any] = {}
    for k, v in params.items():
        if isinstance(v, RawParam) and props.get(k, {}).get("type") != "string":
            try:
                out[k] = json.loads(str(v))
                continue
            except ValueError:
                pass
        out[k] = str(v) if isinstance(v, RawParam) else v
    return out


def follow_remote(c: Any, run_id: str, watch: bool) -> int:
    after = 0

    def show_events() -> None:
        nonlocal after
        evs = c.events(run_id, after=after)
        for e in evs.items:
            if e.type == "NodeQueued":
                continue
            target = f"{e.node}#{e.attempt}" if e.node else "run"
            state = e.type[4:].lower() if e.type.startswith("Node") else e.type[3:].lower()
            msg = f" — {escape(e.message)}" if e.message else ""
            console.print(f"[dim]{e.time:%H:%M:%S}[/] {escape(target)} {styled(state)}{msg}")
        after = evs.next_after

    while True:
        if watch:
            show_events()
        run = c.get_run(run_id)
        if run.state in ("succeeded", "failed", "cancelled"):
            if watch:
                show_events()
            break
        time.sleep(0.3)
    console.print(f"run {run_id} {styled(run.state)} in {fmt_duration(run.duration)}")
    if run.state == "succeeded":
        return 0
    if run.failed_node:
        node = next((n for n in run.nodes if n.name == run.failed_node), None)
        console.print(f"[red]failed step:[/] {escape(run.failed_node)}")
        if node is not None and node.error:
            console.print(f"[red]error:[/] {escape(node.error)}", soft_wrap=True)
        tail = c.logs(run_id, step=run.failed_node, tail=20).items
        if tail:
            console.print("[dim]last log lines:[/]")
            for rec in tail:
                console.print(f"  {escape(rec.line)}", soft_wrap=True, highlight=False)
    elif run.error:
        console.print(f"[red]error:[/] {escape(run.error)}")
    return EXIT_FAILED


def runs_ls(server: str, namespace: str | None, pipeline: str | None, state: str | None,
            limit: int) -> list[dict[str, Any]]:  # fmt: skip
    with client(server) as c:
        page = c.list_runs(namespace=namespace, pipeline=pipeline, state=state, limit=limit)
    return [r.model_dump() for r in page.items]


def runs_get(server: str, run_id: str) -> dict[str, Any]:
    with client(server) as c:
        run = c.get_run(run_id)
    d: dict[str, Any] = run.model_dump()
    d["nodes"] = [n.model_dump() for n in run.nodes]
    return d


def runs_logs(server: str, run_id: str, step: str | None, follow: bool) -> None:
    with client(server) as c:
        after = 0
        while True:
            page = c.logs(run_id, step=step, after=after, limit=5000)
            for rec in page.items:
                print_log_line(rec.model_dump())
            after = page.next_after
            if len(page.items) == 5000:
                continue
            if not follow or page.run_state in ("succeeded", "failed", "cancelled"):
                return
            time.sleep(0.3)


def runs_cancel(server: str, run_id: str) -> str:
    with client(server) as c:
        return str(c.cancel_run(run_id).id)


def runs_rerun(server: str, run_id: str) -> str:
    with client(server) as c:
        return str(c.rerun(run_id).id)


def deploy(server: str, namespace: str, specs: list[Any]) -> None:
    with client(server) as c:
        for spec in specs:
            reg = c.register_pipeline(namespace, spec.model_dump(mode="json"))
            what = "new version" if reg.created else "unchanged"
            console.print(f"{namespace}/{reg.name}: version {reg.version} ({what}) on {server}")

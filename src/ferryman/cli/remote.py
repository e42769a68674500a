"""The CLI against a ferryman server (``--server URL``), through ``ferryman.client``.

The token comes from ``FERRYMAN_TOKEN`` (an API token or a JWT) or from
``ferryman login``, which keeps one JWT per server in
``FERRYMAN_HOME/credentials.json`` (mode 0600).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from types import FrameType
from typing import Any

import typer

from ferryman.cli.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    console,
    err_console,
    escape,
    fail,
    print_candidates,
    settings,
)
from ferryman.cli.render import FAILURE_TAIL, fmt_duration, print_failure, styled
from ferryman.client.errors import ApiError

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
        if exc.code == "ambiguous":
            print_candidates(exc.message, exc.details)
            raise typer.Exit(2)
        if exc.code in ("invalid_params", "invalid") and isinstance(exc.details, list):
            err_console.print(f"[bold red]error:[/] {escape(exc.message)}:")
            for d in exc.details:
                if isinstance(d, dict):
                    err_console.print(f"  - [bold]{escape(str(d.get('path') or '(params)'))}[/]: "
                                      f"{escape(str(d.get('reason')))}",
                                      soft_wrap=True)  # fmt: skip
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
            params, hints = type_params(params, spec)
        else:
            detail = c.get_pipeline(namespace, name)
            params, hints = type_params(params, detail)
        try:
            run = c.create_run(
                namespace, name, params=params, labels=labels or None,
                idempotency_key=idempotency_key, timeout=timeout,
            )  # fmt: skip
        except ApiError as exc:
            raise with_hints(exc, hints) from None
        if not run.created:
            console.print(f"run {run.id} already exists for this idempotency key")
        console.print(f"run [bold]{run.id}[/] ({escape(run.name)}) of {namespace}/{name} "
                      f"(version {run.version}) on {server}")  # fmt: skip
        if not (watch or wait):
            return 0
        return follow_remote(c, run.id, watch, server)


def with_hints(exc: ApiError, hints: dict[str, str]) -> ApiError:
    """``exc`` with the CLI's hints (``-p`` syntax) added to the reasons of the
    parameters they are about."""
    if not hints or exc.code != "invalid_params" or not isinstance(exc.details, list):
        return exc
    details = []
    for d in exc.details:
        if isinstance(d, dict):
            top = str(d.get("path") or "").split(".")[0].split("[")[0]
            if top in hints:
                d = {**d, "reason": f"{d.get('reason')} {hints[top]}"}
        details.append(d)
    return ApiError(exc.status, exc.code, exc.message, details)


class _Interrupts:
    """Ctrl-C while following a run on a server: the first asks the server to
    cancel the run (as an embedded ``ferryman run`` does) and keeps waiting for
    its end; the second stops waiting at once (``KeyboardInterrupt``)."""

    def __init__(self) -> None:
        self.count = 0
        self._old: Any = None

    def __enter__(self) -> _Interrupts:
        self._old = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self._old)

    def _on_sigint(self, _signum: int, _frame: FrameType | None) -> None:
        self.count += 1
        if self.count > 1:
            raise KeyboardInterrupt


def follow_remote(c: Any, run_id: str, watch: bool, server: str) -> int:
    """Wait for a run on ``server`` to end (printing its events when ``watch``)
    and return the exit code of its outcome; Ctrl-C cancels it there (130
    once it has ended cancelled), a second Ctrl-C detaches (130 at once)."""
    after = 0
    asked = cancelled = False

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

    with _Interrupts() as interrupts:
        try:
            while True:
                if interrupts.count and not asked:
                    asked = True
                    cancelled = _cancel_on_server(c, run_id)
                if watch:
                    show_events()
                run = c.get_run(run_id)
                if run.state in ("succeeded", "failed", "cancelled"):
                    if watch:
                        show_events()
                    break
                time.sleep(0.3)
        except KeyboardInterrupt:
            if not cancelled:
                # Two quick Ctrl-Cs: the first one's cancel still goes out (again,
                # if the second cut it short: a repeated cancel changes nothing).
                cancelled = _cancel_on_server(c, run_id, quiet=True)
            _detached(run_id, server, cancelled)
            return EXIT_INTERRUPTED
    console.print(f"run {run_id} {styled(run.state)} in {fmt_duration(run.duration)}")
    if run.state == "succeeded":
        return 0
    tail = c.logs(run_id, step=run.failed_node, tail=FAILURE_TAIL).items if run.failed_node else []
    print_failure(run, tail)
    return EXIT_INTERRUPTED if asked and run.state == "cancelled" else EXIT_FAILED


def _cancel_on_server(c: Any, run_id: str, *, quiet: bool = False) -> bool:
    """Ask the server to cancel the run; whether it took the request."""
    if not quiet:
        err_console.print(
            "[yellow]cancelling the run on the server and waiting for it to end "
            "(Ctrl-C again to stop waiting)…[/]"
        )
    try:
        c.cancel_run(run_id)
    except ApiError as exc:  # already ended (409), or not allowed to
        err_console.print(f"[dim]{escape(exc.message)}[/]")
        return False
    return True


def _detached(run_id: str, server: str, cancelled: bool) -> None:
    state = "being cancelled" if cancelled else "running"
    err_console.print(
        f"[yellow]detached: run {run_id} is still {state} on {server}[/]\n"
        f"  follow it: ferryman runs logs {run_id} --follow --server {server}\n"
        f"  see it:    ferryman runs get {run_id} --server {server}\n"
        f"  cancel it: ferryman runs cancel {run_id} --server {server}",
        soft_wrap=True,
    )


def deploy(server: str, namespace: str, specs: list[Any]) -> None:
    with client(server) as c:
        for spec in specs:
            reg = c.register_pipeline(namespace, spec.model_dump(mode="json"))
            what = "new version" if reg.created else "unchanged"
            console.print(f"{namespace}/{reg.name}: version {reg.version} ({what}) on {server}")

"""``ferryman schedules``: add, list, inspect, pause, resume, delete, run now
and backfill schedules, in the local database or on a server (``--server``);
and ``ferryman scheduler``, the scheduler loop alone (docs/schedules.md)."""

from __future__ import annotations

import datetime as dt
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import typer

from ferryman.cli.common import (
    clean_errors,
    console,
    escape,
    fail,
    open_store,
    parse_params,
    settings,
    setup_logging,
    table,
    type_params,
)
from ferryman.cli.render import print_json

if TYPE_CHECKING:
    from ferryman.api.schedule_schemas import (
        NextFires,
        ScheduleList,
        SchedulePublic,
        TickList,
        TickOutcome,
    )

app = typer.Typer(help="Schedules: run pipelines on cron or at intervals.", no_args_is_help=True)

SERVER = typer.Option(
    None, "--server", envvar="FERRYMAN_SERVER", help="Ask this ferryman server instead"
)
JSON = typer.Option(False, "--json", help="Print JSON (the REST API's fields) instead")
NAMESPACE = typer.Option("default", "--namespace", "-n", help="The schedule's namespace")
NAME = typer.Argument(..., help="The schedule's name")


class Local:
    """The schedules of the local database (``FERRYMAN_DATABASE_URL``/home)."""

    def __init__(self) -> None:
        self.store = open_store(settings())

    def pipeline(self, ns: str, name: str) -> Any:
        from ferryman.errors import InvalidInput, NotFound
        from ferryman.services.catalog import latest

        with self.store.read() as conn:
            try:
                return latest(conn, ns, name).spec
            except NotFound:
                raise InvalidInput(
                    f"no pipeline {name!r} in namespace {ns!r} (deploy it first)"
                ) from None

    def create(self, ns: str, body: dict[str, Any]) -> SchedulePublic:
        from ferryman.api.schedule_schemas import SchedulePublic
        from ferryman.services import schedules as svc

        spec = svc.parse_spec(body)
        return SchedulePublic.model_validate(svc.create(self.store, ns, spec).as_dict())

    def list(self, ns: str | None) -> ScheduleList:
        from ferryman.api.schedule_schemas import ScheduleList, SchedulePublic
        from ferryman.services import schedules as svc

        with self.store.read() as conn:
            items = svc.list_schedules(conn, ns)
        return ScheduleList(items=[SchedulePublic.model_validate(s.as_dict()) for s in items])

    def get(self, ns: str, name: str) -> SchedulePublic:
        from ferryman.api.schedule_schemas import SchedulePublic
        from ferryman.services import schedules as svc

        with self.store.read() as conn:
            return SchedulePublic.model_validate(svc.get(conn, ns, name).as_dict())

    def update(self, ns: str, name: str, changes: dict[str, Any]) -> SchedulePublic:
        from ferryman.api.schedule_schemas import SchedulePublic
        from ferryman.services import schedules as svc

        return SchedulePublic.model_validate(svc.update(self.store, ns, name, changes).as_dict())

    def delete(self, ns: str, name: str) -> None:
        from ferryman.services import schedules as svc

        svc.delete(self.store, ns, name)

    def upcoming(self, ns: str, name: str, n: int) -> NextFires:
        from ferryman.api.schedule_schemas import FireTime, NextFires
        from ferryman.domain.schedules import next_ticks

        spec = self.get(ns, name)
        zone = spec.zone
        now = dt.datetime.now(dt.UTC)
        items = [FireTime(local=t.astimezone(zone), utc=t) for t in next_ticks(spec, now, n)]
        return NextFires(timezone=spec.timezone, items=items)

    def ticks(self, ns: str, name: str, limit: int) -> TickList:
        from ferryman.api.schedule_schemas import TickList, TickPublic
        from ferryman.services import schedules as svc

        with self.store.read() as conn:
            rows = svc.tick_history(conn, svc.get(conn, ns, name).id, limit)
        return TickList(items=[TickPublic.model_validate(r) for r in rows])

    def run_now(self, ns: str, name: str) -> TickOutcome:
        from ferryman.api.schedule_schemas import TickOutcome
        from ferryman.services.ticks import Ticks

        return TickOutcome(fired=1, run_ids=[Ticks(self.store).run_now(ns, name)])

    def backfill(
        self, ns: str, name: str, start: dt.datetime, end: dt.datetime, overlap: str
    ) -> TickOutcome:
        from ferryman.api.schedule_schemas import TickOutcome
        from ferryman.domain.schedules import Overlap
        from ferryman.services.ticks import Ticks

        r = Ticks(self.store).backfill(ns, name, start, end, overlap=Overlap(overlap))
        return TickOutcome(
            fired=r.fired, skipped=r.skipped, buffered=r.buffered, failed=r.failed,
            run_ids=r.run_ids,
        )  # fmt: skip


class Remote:
    """The schedules of a server, through the Python client."""

    def __init__(self, client: Any) -> None:
        self.c = client

    def pipeline(self, ns: str, name: str) -> Any:
        return self.c.get_pipeline(ns, name)

    def create(self, ns: str, body: dict[str, Any]) -> SchedulePublic:
        return self.c.create_schedule(body, namespace=ns)  # type: ignore[no-any-return]

    def list(self, ns: str | None) -> ScheduleList:
        return self.c.list_schedules(ns)  # type: ignore[no-any-return]

    def get(self, ns: str, name: str) -> SchedulePublic:
        return self.c.get_schedule(name, namespace=ns)  # type: ignore[no-any-return]

    def update(self, ns: str, name: str, changes: dict[str, Any]) -> SchedulePublic:
        return self.c.update_schedule(name, changes, namespace=ns)  # type: ignore[no-any-return]

    def delete(self, ns: str, name: str) -> None:
        self.c.delete_schedule(name, namespace=ns)

    def upcoming(self, ns: str, name: str, n: int) -> NextFires:
        return self.c.next_fire_times(name, n, namespace=ns)  # type: ignore[no-any-return]

    def ticks(self, ns: str, name: str, limit: int) -> TickList:
        return self.c.schedule_ticks(name, limit, namespace=ns)  # type: ignore[no-any-return]

    def run_now(self, ns: str, name: str) -> TickOutcome:
        return self.c.run_schedule_now(name, namespace=ns)  # type: ignore[no-any-return]

    def backfill(
        self, ns: str, name: str, start: dt.datetime, end: dt.datetime, overlap: str
    ) -> TickOutcome:
        return self.c.backfill_schedule(  # type: ignore[no-any-return]
            name, start, end, overlap=overlap, namespace=ns
        )


@contextmanager
def backend(server: str | None) -> Iterator[Local | Remote]:
    """The server's schedules when ``server`` is set, else the local database's;
    expected errors become one-line messages and exit codes."""
    with clean_errors():
        if not server:
            yield Local()
            return
        from ferryman.cli import remote

        with remote.client(server) as c:
            try:
                yield Remote(c)
            except Exception as exc:
                remote.api_errors(exc)


def _when(value: dt.datetime | None) -> str:
    return "-" if value is None else value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _time(text: str | None, option: str) -> dt.datetime | None:
    if text is None:
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        fail(f"{option}: {text!r} is not an ISO date or time (e.g. 2026-01-31T09:00:00+00:00)")
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _show(s: SchedulePublic) -> None:
    state = "[yellow]paused[/]" if s.paused else "[green]active[/]"
    console.print(f"[bold]{escape(s.namespace)}/{escape(s.name)}[/] {state} ({escape(s.source)})")
    console.print(f"  pipeline   {escape(s.pipeline)}")
    console.print(f"  when       {escape(s.describe())}")
    console.print(f"  next       {_when(s.next_fire_at)}")
    console.print(f"  catch-up   {s.catchup.value} (max {s.max_catchup}, "
                  f"window {s.catchup_window:g}s)")  # fmt: skip
    console.print(f"  overlap    {s.overlap.value}")
    console.print(f"  dst        missing time: {s.on_missing_time}, "
                  f"repeated time: {s.on_repeated_time}")  # fmt: skip
    if s.params:
        console.print(f"  params     {escape(', '.join(sorted(s.params)))}")


@app.command("add")
def add(
    name: str = NAME,
    pipeline: str = typer.Argument(..., help="The deployed pipeline it runs"),
    cron: str = typer.Option(None, "--cron", help="Cron text: 5 fields, or 6 with seconds"),
    every: float = typer.Option(None, "--every", help="Or a fixed interval, in seconds"),
    timezone: str = typer.Option("UTC", "--tz", "--timezone", help="IANA time zone of the cron"),
    param: list[str] = typer.Option(
        None, "--param", "-p", help="name=value, name=@file.json (repeatable)"
    ),
    params_file: Path = typer.Option(None, "--params-file", help="JSON or YAML file of params"),
    catchup: str = typer.Option("latest", "--catchup", help="none, latest or all"),
    max_catchup: int = typer.Option(10, "--max-catchup", min=1),
    catchup_window: float = typer.Option(3600.0, "--catchup-window", help="Seconds"),
    overlap: str = typer.Option(
        "skip", "--overlap", help="allow, skip, buffer_one, buffer_all or cancel_other"
    ),
    jitter: float = typer.Option(0.0, "--jitter", help="Delay each run up to this (seconds)"),
    start: str = typer.Option(None, "--start", help="No tick before (ISO time)"),
    end: str = typer.Option(None, "--end", help="No tick after (ISO time)"),
    on_missing_time: str = typer.Option("shift", "--on-missing-time", help="shift or skip"),
    on_repeated_time: str = typer.Option("once", "--on-repeated-time", help="once or twice"),
    label: list[str] = typer.Option(None, "--label", "-l", help="KEY=VALUE on every run"),
    paused: bool = typer.Option(False, "--paused", help="Create it paused"),
    namespace: str = NAMESPACE,
    as_json: bool = JSON,
    server: str = SERVER,
) -> None:
    """Create a schedule; it fires from the next tick on (never a past one)."""
    with clean_errors():
        raw_params = parse_params(param, params_file)
        labels: dict[str, str] = {}
        for item in label or []:
            key, sep, value = item.partition("=")
            if not sep or not key:
                fail(f"--label {item!r} must look like KEY=VALUE")
            labels[key] = value
        body: dict[str, Any] = {
            "name": name, "pipeline": pipeline, "cron": cron, "interval": every,
            "timezone": timezone, "params": {}, "labels": labels, "catchup": catchup,
            "max_catchup": max_catchup, "catchup_window": catchup_window, "overlap": overlap,
            "jitter": jitter, "start_at": _time(start, "--start"), "end_at": _time(end, "--end"),
            "on_missing_time": on_missing_time, "on_repeated_time": on_repeated_time,
            "paused": paused,
        }  # fmt: skip
        body = {k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in body.items()}
    with backend(server) as b:
        # -p values get their types from the pipeline's parameters (as `ferryman run`)
        body["params"], _ = type_params(raw_params, b.pipeline(namespace, pipeline))
        created = b.create(namespace, body)
    if as_json:
        print_json(created.model_dump(mode="json"))
        return
    console.print(f"created schedule {escape(created.name)}: next tick "
                  f"{_when(created.next_fire_at)}")  # fmt: skip


@app.command("ls")
def ls(
    namespace: str = typer.Option(None, "--namespace", "-n", help="Only this namespace"),
    as_json: bool = JSON,
    server: str = SERVER,
) -> None:
    """List schedules."""
    with backend(server) as b:
        items = b.list(namespace).items
    if as_json:
        print_json([s.model_dump(mode="json") for s in items])
        return
    t = table("namespace", "name", "pipeline", "when", "state", "next (UTC)")
    for s in items:
        t.add_row(
            escape(s.namespace), escape(s.name), escape(s.pipeline), escape(s.describe()),
            "paused" if s.paused else "active", _when(s.next_fire_at),
        )  # fmt: skip
    console.print(t)


@app.command("get")
def get(name: str = NAME, namespace: str = NAMESPACE, as_json: bool = JSON,
        server: str = SERVER) -> None:  # fmt: skip
    """Show a schedule."""
    with backend(server) as b:
        s = b.get(namespace, name)
    if as_json:
        print_json(s.model_dump(mode="json"))
    else:
        _show(s)


@app.command("pause")
def pause(name: str = NAME, namespace: str = NAMESPACE, server: str = SERVER) -> None:
    """Pause a schedule: no tick fires until it is resumed."""
    with backend(server) as b:
        b.update(namespace, name, {"paused": True})
    console.print(f"paused {escape(name)}")


@app.command("resume")
def resume(name: str = NAME, namespace: str = NAMESPACE, server: str = SERVER) -> None:
    """Resume a schedule; the ticks of the pause are not fired (see ``backfill``)."""
    with backend(server) as b:
        s = b.update(namespace, name, {"paused": False})
    console.print(f"resumed {escape(name)}: next tick {_when(s.next_fire_at)}")


@app.command("rm")
def rm(name: str = NAME, namespace: str = NAMESPACE, server: str = SERVER) -> None:
    """Delete a schedule (its runs stay)."""
    with backend(server) as b:
        b.delete(namespace, name)
    console.print(f"deleted {escape(name)}")


@app.command("next")
def upcoming(
    name: str = NAME,
    count: int = typer.Option(10, "-n", "--count", min=1, max=1000, help="How many"),
    namespace: str = typer.Option("default", "--namespace", help="The schedule's namespace"),
    as_json: bool = JSON,
    server: str = SERVER,
) -> None:
    """The next fire times, in the schedule's time zone and in UTC."""
    with backend(server) as b:
        nxt = b.upcoming(namespace, name, count)
    if as_json:
        print_json(nxt.model_dump(mode="json"))
        return
    t = table(f"local ({nxt.timezone})", "UTC")
    for item in nxt.items:
        t.add_row(item.local.isoformat(), item.utc.astimezone(dt.UTC).isoformat())
    console.print(t)


@app.command("runs")
def runs(
    name: str = NAME,
    limit: int = typer.Option(20, "--limit", min=1, max=1000),
    namespace: str = NAMESPACE,
    as_json: bool = JSON,
    server: str = SERVER,
) -> None:
    """The schedule's newest ticks: fired (with their runs), missed, skipped."""
    with backend(server) as b:
        items = b.ticks(namespace, name, limit).items
    if as_json:
        print_json([i.model_dump(mode="json") for i in items])
        return
    t = table("tick (UTC)", "state", "kind", "run", "run state", "why")
    for i in items:
        t.add_row(
            _when(i.fire_time), i.state, i.kind, escape(i.run_name or "-"),
            i.run_state or "-", escape(i.reason or ""),
        )  # fmt: skip
    console.print(t)


@app.command("run")
def run_now(
    name: str = NAME,
    now: bool = typer.Option(False, "--now", help="Start one run now (required)"),
    namespace: str = NAMESPACE,
    server: str = SERVER,
) -> None:
    """Start one run of the schedule now, with its parameters (a test run)."""
    if not now:
        with clean_errors():
            fail("say --now to start a run of the schedule now")
    with backend(server) as b:
        out = b.run_now(namespace, name)
    console.print(f"started run {out.run_ids[0]}")


@app.command("backfill")
def backfill(
    name: str = NAME,
    start: str = typer.Option(..., "--from", help="From (exclusive; ISO time)"),
    end: str = typer.Option(..., "--to", help="To (inclusive; ISO time)"),
    overlap: str = typer.Option("allow", "--overlap", help="The backfill's overlap policy"),
    namespace: str = NAMESPACE,
    server: str = SERVER,
) -> None:
    """Fire the ticks of a past range that were never decided."""
    with clean_errors():
        a, z = _time(start, "--from"), _time(end, "--to")
        assert a is not None and z is not None
        if overlap not in ("allow", "skip", "buffer_one", "buffer_all", "cancel_other"):
            fail(f"--overlap {overlap!r}: use allow, skip, buffer_one, buffer_all or cancel_other")
    with backend(server) as b:
        out = b.backfill(namespace, name, a, z, overlap)
    console.print(f"backfill: {out.fired} fired, {out.skipped} skipped, "
                  f"{out.buffered} buffered, {out.failed} failed")  # fmt: skip


def scheduler_command(
    log_level: str = typer.Option("INFO", "--log-level"),
) -> None:
    """Run the scheduler alone (``ferryman server`` runs one too); any number
    may share a database: no tick fires twice."""
    setup_logging(log_level)
    with clean_errors():
        from ferryman.engine.scheduler import Scheduler

        s = settings()
        store = open_store(s)
        loop = Scheduler(store, s)
        stops = 0

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            nonlocal stops
            stops += 1
            if stops > 1:
                raise SystemExit(130)
            loop.stop()

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, on_signal)
            signal.signal(signal.SIGINT, on_signal)
        console.print(f"scheduler started on {store.url.get_backend_name()}")
        loop.run()
        console.print("scheduler stopped")

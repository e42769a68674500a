"""``ferryman subscriptions``: subscribe URLs to events, test them, and inspect
and redeliver their deliveries. The local database by default, a server with
``--server URL`` (admins manage subscriptions there; operators redeliver)."""

from __future__ import annotations

import os
from typing import Any

import typer

from ferryman.cli.common import EXIT_FAILED, clean_errors, console, escape, fail, open_store, table
from ferryman.cli.render import print_json

app = typer.Typer(help="Subscribe endpoints to run events; inspect deliveries.",
                  no_args_is_help=True)  # fmt: skip

SERVER = typer.Option(
    None, "--server", envvar="FERRYMAN_SERVER", help="Ask this ferryman server instead"
)
JSON = typer.Option(False, "--json", help="Print JSON (the REST API's fields) instead")


def _remote(fn: Any, *args: Any, **kw: Any) -> Any:
    from ferryman.cli import remote

    try:
        return fn(*args, **kw)
    except Exception as exc:
        remote.api_errors(exc)


def _pairs(values: list[str] | None, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    bad = []
    for v in values or []:
        key, sep, val = v.partition("=")
        if not sep or not key:
            bad.append(v)
        else:
            out[key] = val
    if bad:
        fail(f"{what} must look like KEY=VALUE: {', '.join(repr(b) for b in bad)}")
    return out


def _on(enabled: bool, reason: str | None) -> str:
    if enabled:
        return "[green]on[/]"
    return "[yellow]off[/]" + (f" ({escape(reason)})" if reason else "")


@app.command("add")
def add(
    name: str = typer.Argument(..., help="A unique name, e.g. ops-alerts"),
    url: str = typer.Argument(..., help="Where events are POSTed (http:// or https://)"),
    format: str = typer.Option("ferryman", "--format", "-f", help="ferryman, kfp, slack, teams"),
    event: list[str] = typer.Option(None, "--event", "-e", help="Event type (repeatable)"),
    namespace: list[str] = typer.Option(None, "--namespace", "-n", help="Namespace (repeatable)"),
    pipeline: list[str] = typer.Option(
        None, "--pipeline", "-p", help="Pipeline, NAME or NS/NAME (repeatable)"
    ),
    label: list[str] = typer.Option(None, "--label", "-l", help="KEY=VALUE the run must carry"),
    header: list[str] = typer.Option(None, "--header", "-H", help="KEY=VALUE extra header"),
    secret_env: str = typer.Option(
        None, "--secret-env", help="Read the whsec_… secret from this environment variable"
    ),
    disabled: bool = typer.Option(False, "--disabled", help="Create it switched off"),
    server: str = SERVER,
) -> None:
    """Subscribe URL to events. The signing secret is printed once: keep it."""
    with clean_errors():
        secret = None
        if secret_env:
            secret = os.environ.get(secret_env)
            if not secret:
                fail(f"--secret-env: environment variable {secret_env} is not set")
        body: dict[str, Any] = {
            "name": name, "url": url, "format": format, "event_types": event or [],
            "namespaces": namespace or [], "pipelines": pipeline or [],
            "labels": _pairs(label, "--label"), "headers": _pairs(header, "--header"),
            "enabled": not disabled,
        }  # fmt: skip
        if secret:
            body["secret"] = secret
        if server:
            from ferryman.cli import remote

            with remote.client(server) as c:
                created = _remote(c.create_subscription, **body)
            record, secret = created.model_dump(), created.secret
        else:
            from ferryman.cli.common import settings
            from ferryman.http import destination_policy
            from ferryman.services import subscriptions as subs

            s = settings()
            spec = subs.SubscriptionCreate.model_validate(body)
            with open_store(s).write() as conn:
                record, secret = subs.create_subscription(conn, spec, policy=destination_policy(s))
        console.print(f"subscription [bold]{escape(record['name'])}[/] ({record['id']}) → "
                      f"{escape(record['url'])} [{record['format']}]")  # fmt: skip
        if body.get("secret"):
            console.print("signing secret: the one from " + secret_env)
        else:
            console.print(f"signing secret (shown only now): [bold]{secret}[/]")


@app.command("ls")
def ls(as_json: bool = JSON, server: str = SERVER) -> None:
    """List subscriptions (secrets are never shown)."""
    with clean_errors():
        if server:
            from ferryman.cli import remote

            with remote.client(server) as c:
                items = [i.model_dump() for i in _remote(c.list_subscriptions).items]
        else:
            from ferryman.services import subscriptions as subs

            with open_store().read() as conn:
                items = subs.list_subscriptions(conn)
        if as_json:
            from ferryman.api.subscription_schemas import SubscriptionPublic

            print_json([SubscriptionPublic.model_validate(i) for i in items])
            return
        t = table("name", "url", "format", "filters", "enabled", "source")
        for i in items:
            filters = []
            for key in ("event_types", "namespaces", "pipelines"):
                if i[key]:
                    filters.append(f"{key}={','.join(i[key])}")
            if i["labels"]:
                filters.append("labels=" + ",".join(f"{k}={v}" for k, v in i["labels"].items()))
            t.add_row(
                escape(i["name"]),
                escape(i["url"]),
                i["format"],
                escape(" ".join(filters) or "all events"),
                _on(i["enabled"], i["disabled_reason"]),
                i["source"],
            )
        console.print(t)


@app.command("rm")
def rm(ref: str = typer.Argument(..., help="Name or id"), server: str = SERVER) -> None:
    """Delete a subscription and its deliveries."""
    with clean_errors():
        if server:
            from ferryman.cli import remote

            with remote.client(server) as c:
                _remote(c.delete_subscription, ref)
        else:
            from ferryman.services import subscriptions as subs

            with open_store().write() as conn:
                subs.delete_subscription(conn, ref)
        console.print(f"subscription {escape(ref)} deleted")


def _set_enabled(ref: str, enabled: bool, server: str | None) -> None:
    with clean_errors():
        if server:
            from ferryman.cli import remote

            with remote.client(server) as c:
                _remote(c.update_subscription, ref, enabled=enabled)
        else:
            from ferryman.services import subscriptions as subs

            with open_store().write() as conn:
                subs.update_subscription(conn, ref, subs.SubscriptionUpdate(enabled=enabled))
        console.print(f"subscription {escape(ref)} {'enabled' if enabled else 'disabled'}")


@app.command("enable")
def enable(ref: str = typer.Argument(..., help="Name or id"), server: str = SERVER) -> None:
    """Switch a subscription on (also after a 410 Gone); its pending deliveries go out."""
    _set_enabled(ref, True, server)


@app.command("disable")
def disable(ref: str = typer.Argument(..., help="Name or id"), server: str = SERVER) -> None:
    """Switch a subscription off; its deliveries wait until it is on again."""
    _set_enabled(ref, False, server)


@app.command("test")
def test(
    ref: str = typer.Argument(..., help="Name or id"),
    event: str = typer.Option("RunSucceeded", "--event", "-e", help="Sample event type"),
    server: str = SERVER,
) -> None:
    """Send a sample event now and show the receiver's status and answer."""
    with clean_errors():
        if server:
            from ferryman.cli import remote

            with remote.client(server) as c:
                r = _remote(c.test_subscription, ref, event).model_dump()
        else:
            from ferryman.cli.common import settings
            from ferryman.http import destination_policy
            from ferryman.notify.formats import FormatContext
            from ferryman.services import deliveries

            s = settings()
            with open_store(s).read() as conn:
                res = deliveries.send_test(conn, ref, policy=destination_policy(s),
                                           event_type=event, timeout=s.delivery.timeout,
                                           ctx=FormatContext(s.base_url))  # fmt: skip
            r = {**res.__dict__, "ok": res.ok}
        status = r["status"] if r["status"] is not None else "no answer"
        style = "green" if r["ok"] else "red"
        console.print(f"[{style}]{status}[/] in {r['latency_ms']:.0f} ms "
                      f"(event {r['event_id']})")  # fmt: skip
        if r["error"]:
            console.print(f"error: {escape(r['error'])}")
        if r["response"]:
            console.print(f"answer: {escape(r['response'])}")
        if not r["ok"]:
            raise typer.Exit(EXIT_FAILED)


@app.command("deliveries")
def deliveries_command(
    ref: str = typer.Argument(None, help="Only this subscription (name or id)"),
    state: str = typer.Option(None, "--state", help="pending, delivered or dead"),
    run: str = typer.Option(None, "--run", help="Only this run's deliveries"),
    limit: int = typer.Option(20, "--limit", min=1, max=500),
    as_json: bool = JSON,
    server: str = SERVER,
) -> None:
    """List deliveries, newest first (dead letters: --state dead)."""
    with clean_errors():
        if server:
            from ferryman.cli import remote

            with remote.client(server) as c:
                page = _remote(c.list_deliveries, subscription=ref, state=state, run_id=run,
                               limit=limit)  # fmt: skip
                items = [i.model_dump() for i in page.items]
        else:
            from ferryman.services import deliveries

            with open_store().read() as conn:
                items = deliveries.list_deliveries(conn, subscription=ref, state=state,
                                                   run_id=run, limit=limit)  # fmt: skip
        if as_json:
            from ferryman.api.subscription_schemas import DeliveryPublic

            print_json([DeliveryPublic.model_validate(i) for i in items])
            return
        t = table("id", "subscription", "event", "run", "state", "attempts", "last")
        style = {"delivered": "green", "dead": "red", "pending": "yellow"}
        for i in items:
            last = str(i["last_status"] or "") + (f" {i['last_error']}" if i["last_error"] else "")
            t.add_row(
                str(i["id"]),
                escape(i["subscription"]),
                i["event_type"],
                i["run_id"],
                f"[{style[i['state']]}]{i['state']}[/]",
                str(i["attempts"]),
                escape(last.strip()[:60]),
            )
        console.print(t)


@app.command("delivery")
def delivery(
    delivery_id: int = typer.Argument(..., help="A delivery's id"),
    as_json: bool = JSON,
    server: str = SERVER,
) -> None:
    """Show a delivery and every attempt: status, latency, error, answer."""
    with clean_errors():
        if server:
            from ferryman.cli import remote

            with remote.client(server) as c:
                d = _remote(c.get_delivery, delivery_id).model_dump()
        else:
            from ferryman.services import deliveries

            with open_store().read() as conn:
                d = deliveries.get_delivery(conn, delivery_id)
        if as_json:
            from ferryman.api.subscription_schemas import DeliveryDetail

            print_json(DeliveryDetail.model_validate(d))
            return
        console.print(f"[bold]delivery {d['id']}[/]  {d['event_type']} of run {d['run_id']} → "
                      f"{escape(d['subscription'])}  {d['state']}  (webhook-id "
                      f"{d['event_id']})")  # fmt: skip
        t = table("attempt", "time", "status", "latency (ms)", "error", "answer")
        for a in d["attempt_log"]:
            t.add_row(
                str(a["attempt"]),
                f"{a['time']:%Y-%m-%d %H:%M:%S}",
                str(a["status"] or ""),
                f"{a['latency_ms']:.1f}",
                escape(a["error"] or ""),
                escape((a["response"] or "")[:80]),
            )
        console.print(t)


@app.command("redeliver")
def redeliver(
    delivery_ids: list[int] = typer.Argument(None, help="Delivery ids"),
    all_dead: str = typer.Option(
        None, "--all-dead", help="Every dead delivery of this subscription (name or id)"
    ),
    server: str = SERVER,
) -> None:
    """Queue dead-lettered deliveries again, with a fresh retry budget."""
    with clean_errors():
        if not delivery_ids and not all_dead:
            fail("give delivery ids, or --all-dead SUBSCRIPTION")
        queued = 0
        if server:
            from ferryman.cli import remote

            with remote.client(server) as c:
                for i in delivery_ids or []:
                    queued += _remote(c.redeliver, i).queued
                if all_dead:
                    queued += _remote(c.redeliver_dead, all_dead).queued
        else:
            from ferryman.services import deliveries

            with open_store().write() as conn:
                for i in delivery_ids or []:
                    deliveries.get_delivery(conn, i)  # a clear error for an unknown id
                queued += deliveries.redeliver(conn, delivery_ids or [])
                if all_dead:
                    queued += deliveries.redeliver_dead(conn, all_dead)
        console.print(f"{queued} deliver{'y' if queued == 1 else 'ies'} queued again")

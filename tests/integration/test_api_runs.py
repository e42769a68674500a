"""The runs and pipelines REST routes on SQLite and PostgreSQL (TestClient)."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from starlette.exceptions import StarletteDeprecationWarning

with warnings.catch_warnings():
    # Starlette >= 1.x prefers httpx2 for its TestClient and warns (an error
    # here) when it falls back to httpx, which is what the project depends on.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

from ferryman.api.app import create_app
from ferryman.dsl.loader import load_pipeline
from ferryman.engine.worker import Worker
from ferryman.services.auth import Role, create_api_token, create_user
from ferryman.settings import Settings
from ferryman.store.engine import Store
from ferryman.store.tables import callbacks, runs

PIPES = Path(__file__).parent.parent / "pipelines" / "basic.py"

H = dict[str, str]


def spec_json(name: str) -> dict[str, Any]:
    return load_pipeline(f"{PIPES}:{name}").model_dump(mode="json")


#: A pipeline written as the JSON the DSL/YAML compile to, with typed
#: parameters and validators (nothing of it runs in these tests).
TYPED = {
    "name": "typed",
    "params": [
        {"name": "day", "type": "date"},
        {"name": "count", "type": "integer", "minimum": 1, "maximum": 10},
        {"name": "lang", "type": "string", "required": False, "default": "en"},
        {"name": "callback", "type": "string", "required": False},
    ],
    "validators": [
        {"kind": "language", "fields": ["lang"]},
        {"kind": "url", "fields": ["callback"]},
    ],
    "steps": [
        {"name": "a", "function": {"module": "os.path", "qualname": "join"}},
        {"name": "b", "function": {"module": "os.path", "qualname": "join"}, "depends_on": ["a"]},
    ],
}


@pytest.fixture
def app(settings: Settings, store: Store) -> FastAPI:
    return create_app(settings, store)


@pytest.fixture
def api(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client


@pytest.fixture
def tokens(store: Store) -> dict[str, str]:
    """An API token per role (users without password: no Argon2 cost)."""
    out = {}
    with store.write() as conn:
        for role in Role:
            user = create_user(conn, f"{role.value}-bot", None, role)
            _, token = create_api_token(conn, user["id"], "tests")
            out[role.value] = token
    return out


@pytest.fixture
def op(tokens: dict[str, str]) -> H:
    return {"Authorization": f"Bearer {tokens['operator']}"}


@pytest.fixture
def dev(tokens: dict[str, str]) -> H:
    """Registers pipelines: operators may not (issue 11: code is the developer's)."""
    return {"Authorization": f"Bearer {tokens['developer']}"}


@pytest.fixture
def viewer(tokens: dict[str, str]) -> H:
    return {"Authorization": f"Bearer {tokens['viewer']}"}


def register(api: TestClient, op: H, spec: dict[str, Any], ns: str = "default") -> Any:
    r = api.post(f"/namespaces/{ns}/pipelines", json=spec, headers=op)
    assert r.status_code in (200, 201), r.text
    return r.json()


def create(
    api: TestClient,
    op: H,
    pipeline: str,
    ns: str = "default",
    status: int = 201,
    key: str | None = None,
    **body: Any,
) -> Any:
    headers = {**op, **({"Idempotency-Key": key} if key else {})}
    r = api.post(f"/namespaces/{ns}/pipelines/{pipeline}/runs", json=body, headers=headers)
    assert r.status_code == status, r.text
    return r.json()


def error(r: Any, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert "Traceback" not in r.text
    err: dict[str, Any] = body["error"]
    return err


def drain(store: Store, settings: Settings, *run_ids: str) -> None:
    Worker(store, settings).run_until(set(run_ids), timeout=60)


# -- pipelines -------------------------------------------------------------------


def test_register_list_get_versions(api: TestClient, op: H, dev: H, viewer: H) -> None:
    r = api.post("/namespaces/team-a/pipelines", json=TYPED, headers=dev)
    assert r.status_code == 201, r.text
    first = r.json()
    assert first["created"] is True and first["name"] == "typed" and first["namespace"] == "team-a"
    r = api.post("/namespaces/team-a/pipelines", json=TYPED, headers=dev)
    assert r.status_code == 200 and r.json() == {**first, "created": False}
    changed = {**TYPED, "description": "now documented"}
    second = api.post("/namespaces/team-a/pipelines", json=changed, headers=dev).json()
    assert second["created"] is True and second["version"] != first["version"]
    register(api, dev, spec_json("fan"), ns="team-a")

    listed = api.get("/namespaces/team-a/pipelines", headers=viewer).json()["items"]
    assert [(p["name"], p["versions"]) for p in listed] == [("fan", 1), ("typed", 2)]
    assert listed[1]["latest_version"] == second["version"]
    assert api.get("/namespaces/elsewhere/pipelines", headers=viewer).json() == {"items": []}

    detail = api.get("/namespaces/team-a/pipelines/typed", headers=viewer).json()
    assert detail["version"] == second["version"] and detail["description"] == "now documented"
    schema = detail["params_schema"]
    assert set(schema["properties"]) == {"day", "count", "lang", "callback"}
    assert set(schema["required"]) == {"day", "count"}
    assert schema["properties"]["count"]["maximum"] == 10
    assert [(s["name"], s["depends_on"]) for s in detail["steps"]] == [("a", []), ("b", ["a"])]
    old = api.get(
        "/namespaces/team-a/pipelines/typed", params={"version": first["version"]}, headers=viewer
    ).json()
    assert old["version"] == first["version"] and old["description"] == ""

    versions = api.get("/namespaces/team-a/pipelines/typed/versions", headers=viewer).json()
    assert [v["version"] for v in versions["items"]] == [second["version"], first["version"]]


def test_pipeline_errors(api: TestClient, op: H, dev: H, viewer: H) -> None:
    register(api, dev, TYPED)
    err = error(api.get("/namespaces/default/pipelines/nope", headers=viewer), 404)
    assert "typed" in err["message"]  # the namespace's pipelines are listed
    err = error(api.get("/namespaces/default/pipelines/nope/versions", headers=viewer), 404)
    assert "typed" in err["message"]
    err = error(
        api.get("/namespaces/default/pipelines/typed", params={"version": "x"}, headers=viewer),
        404,
    )
    assert "no version 'x'" in err["message"]
    err = error(api.get("/namespaces/bad%20name/pipelines", headers=viewer), 422)
    assert err["details"][0]["path"] == "ns"
    cyclic = {
        "name": "cyclic",
        "steps": [
            {"name": "a", "function": {"module": "m", "qualname": "f"}, "depends_on": ["b"]},
            {"name": "b", "function": {"module": "m", "qualname": "f"}, "depends_on": ["a"]},
        ],
    }
    err = error(api.post("/namespaces/default/pipelines", json=cyclic, headers=dev), 422)
    assert "cycle" in json.dumps(err["details"])
    unknown = {**TYPED, "validators": [{"kind": "nope", "fields": ["day"]}]}
    err = error(api.post("/namespaces/default/pipelines", json=unknown, headers=dev), 422)
    assert err["details"][0]["path"] == "validators.0"
    assert "unknown validator kind" in err["details"][0]["reason"]
    error(api.post("/namespaces/default/pipelines", json=TYPED, headers=viewer), 403)
    error(api.post("/namespaces/default/pipelines", json=TYPED, headers=op), 403)
    error(api.post("/namespaces/default/pipelines", json=TYPED), 401)


# -- auth ------------------------------------------------------------------------------


def test_auth_roles_and_jwt_login(api: TestClient, store: Store, op: H, dev: H, viewer: H) -> None:
    register(api, dev, spec_json("fan"))
    error(api.get("/runs"), 401)
    error(api.get("/runs", headers={"Authorization": "Bearer nonsense"}), 401)
    assert api.get("/runs", headers=viewer).status_code == 200
    err = error(api.post("/namespaces/default/pipelines/fan/runs", json={}, headers=viewer), 403)
    assert "operator" in err["message"]
    r = api.post("/default/pipelines/run/fan/", json={}, headers=viewer)
    assert r.status_code == 403 and "operator" in r.json()["detail"]  # the old API's shape
    with store.write() as conn:
        create_user(conn, "alice", "correct horse battery", Role.OPERATOR)
    r = api.post("/token", data={"username": "alice", "password": "correct horse battery"})
    assert r.status_code == 200, r.text
    jwt = {"Authorization": f"Bearer {r.json()['access_token']}"}
    run = create(api, jwt, "fan")
    assert run["trigger"] == {"kind": "api", "user": "alice"}


# -- create ------------------------------------------------------------------------------


def test_create_and_get(api: TestClient, store: Store, settings: Settings, op: H, dev: H) -> None:
    register(api, dev, spec_json("fan"))
    run = create(
        api,
        op,
        "fan",
        params={"n": 4},
        labels={"team": "search", "env": "prod"},
        webhook_url="https://hooks.example.com/done?k=1",
        slack_channel="C123",
        slack_thread="1700000000.000100",
        timeout=600,
    )
    assert run["created"] is True and run["state"] == "queued"
    assert len(run["id"]) == 32
    assert run["url"] == f"{settings.base_url}/runs/{run['id']}"
    assert run["params"] == {"n": 4, "shards": 3}  # defaults filled in
    assert run["labels"] == {"team": "search", "env": "prod"}
    assert run["has_webhook"] is True and run["slack_channel"] == "C123"
    assert run["slack_thread"] == "1700000000.000100" and run["timeout"] == 600
    assert run["nodes_total"] == 5 and run["nodes_remaining"] == 5
    with store.read() as conn:
        row = conn.execute(sa.select(runs).where(runs.c.id == run["id"])).one()
    assert row.options == {
        "webhook_url": "https://hooks.example.com/done?k=1",
        "slack_channel": "C123",
        "slack_thread": "1700000000.000100",
        "timeout": 600,
    }
    assert row.deadline is not None

    got = api.get(f"/runs/{run['id']}", headers=op).json()
    assert {k: got[k] for k in ("id", "state", "params")} == {
        k: run[k] for k in ("id", "state", "params")
    }
    assert sorted(n["name"] for n in got["nodes"]) == [
        "numbers", "square_sum", "square_sum-2", "square_sum-3", "total",
    ]  # fmt: skip
    assert {n["state"] for n in got["nodes"]} == {"queued", "pending"}
    # a unique prefix works too; upper case is accepted
    assert api.get(f"/runs/{run['id'][:10].upper()}", headers=op).json()["id"] == run["id"]

    # the callbacks are enqueued when the run ends
    drain(store, settings, run["id"])
    with store.read() as conn:
        kinds = {
            r.kind: r.target
            for r in conn.execute(sa.select(callbacks).where(callbacks.c.run_id == run["id"]))
        }
    assert kinds == {
        "webhook": {"url": "https://hooks.example.com/done?k=1"},
        "slack": {"channel": "C123", "thread": "1700000000.000100"},
    }
    done = api.get(f"/runs/{run['id']}", headers=op).json()
    assert done["state"] == "succeeded" and done["nodes_remaining"] == 0
    outputs = api.get(f"/runs/{run['id']}/outputs", headers=op).json()
    assert outputs["outputs"]["total"] == sum(x * x for x in range(4))
    # one step's output (issue 12, item 12: ferryman runs outputs RUN STEP)
    one = api.get(f"/runs/{run['id']}/outputs", params={"step": "total"}, headers=op).json()
    assert one == {"run_id": run["id"], "outputs": {"total": sum(x * x for x in range(4))}}
    missing = api.get(f"/runs/{run['id']}/outputs", params={"step": "nope"}, headers=op)
    assert missing.status_code == 404
    assert "has no step 'nope' (steps: numbers, " in missing.json()["error"]["message"]


def test_create_without_body_uses_defaults(api: TestClient, op: H, dev: H) -> None:
    register(api, dev, spec_json("fan"))
    r = api.post("/namespaces/default/pipelines/fan/runs", headers=op)
    assert r.status_code == 201, r.text
    assert r.json()["params"] == {"n": 10, "shards": 3}


def test_invalid_params_report_every_error(api: TestClient, op: H, dev: H) -> None:
    register(api, dev, TYPED)
    r = api.post(
        "/namespaces/default/pipelines/typed/runs",
        json={"params": {"day": "yesterday", "lang": "xx", "callback": "ftp://x", "extra": 1}},
        headers=op,
    )
    err = error(r, 422)
    assert err["code"] == "invalid_params"
    paths = sorted(d["path"] for d in err["details"])
    assert paths == ["callback", "count", "day", "extra", "lang"]
    assert all(d["reason"] for d in err["details"])


def test_invalid_body_is_422(api: TestClient, op: H, dev: H) -> None:
    register(api, dev, spec_json("fan"))
    cases: list[tuple[dict[str, Any], str]] = [
        ({"webhook_url": "not a url"}, "webhook_url"),
        ({"labels": {"bad key!": "x"}}, "labels"),
        ({"timeout": -1}, "timeout"),
        ({"slack_thread": "123.4"}, ""),
        ({"unknown": 1}, "unknown"),
        ({"params": [1, 2]}, "params"),
    ]
    for body, path in cases:
        err = error(api.post("/namespaces/default/pipelines/fan/runs", json=body, headers=op), 422)
        assert any(d["path"].startswith(path) for d in err["details"]), (body, err)
    err = error(
        api.post(
            "/namespaces/default/pipelines/fan/runs",
            json={},
            headers={**op, "Idempotency-Key": "k" * 256},
        ),
        422,
    )
    assert err["details"][0]["path"] == "Idempotency-Key"


def test_unknown_pipeline_is_404_listing_the_namespace(api: TestClient, op: H, dev: H) -> None:
    register(api, dev, spec_json("fan"))
    register(api, dev, TYPED)
    err = error(api.post("/namespaces/default/pipelines/fna/runs", json={}, headers=op), 404)
    assert err["code"] == "not_found"
    assert "fna" in err["message"] and "fan, typed" in err["message"]
    err = error(api.post("/namespaces/empty/pipelines/fan/runs", json={}, headers=op), 404)
    assert "fan" in err["message"]


# -- idempotency ---------------------------------------------------------------------


def test_idempotency_key(api: TestClient, op: H, dev: H) -> None:
    register(api, dev, spec_json("fan"))
    register(api, dev, spec_json("failing"))
    first = create(api, op, "fan", key="abc", params={"n": 3})
    again = create(api, op, "fan", key="abc", status=200, params={"n": 3})
    assert again["id"] == first["id"] and again["created"] is False
    # the key is per namespace
    register(api, dev, spec_json("fan"), ns="other")
    elsewhere = create(api, op, "fan", ns="other", key="abc", params={"n": 3})
    assert elsewhere["id"] != first["id"]
    # the same key for another request is a conflict, not a silent wrong answer
    err = error(
        api.post(
            "/namespaces/default/pipelines/fan/runs",
            json={"params": {"n": 4}},
            headers={**op, "Idempotency-Key": "abc"},
        ),
        409,
    )
    assert err["details"] == {"run_id": first["id"]}
    error(
        api.post(
            "/namespaces/default/pipelines/failing/runs",
            json={},
            headers={**op, "Idempotency-Key": "abc"},
        ),
        409,
    )


def test_parallel_creates_with_one_key_make_one_run(
    api: TestClient, store: Store, op: H, dev: H
) -> None:
    register(api, dev, spec_json("fan"))
    barrier = threading.Barrier(50)

    def one(_: int) -> tuple[int, str]:
        barrier.wait()
        r = api.post(
            "/namespaces/default/pipelines/fan/runs",
            json={"params": {"n": 2}},
            headers={**op, "Idempotency-Key": "same-key"},
        )
        return r.status_code, r.json()["id"]

    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(one, range(50)))
    assert {rid for _, rid in results} == {results[0][1]}
    assert sorted(s for s, _ in results) == [200] * 49 + [201]
    with store.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(runs)).scalar() == 1


# -- list ----------------------------------------------------------------------------


def test_list_filters_and_pagination(
    api: TestClient, store: Store, op: H, dev: H, viewer: H
) -> None:
    register(api, dev, spec_json("fan"))
    register(api, dev, TYPED)
    register(api, dev, spec_json("fan"), ns="other")
    made: list[dict[str, Any]] = []
    for i in range(7):
        labels = {"team": "a" if i % 2 else "b", "idx": str(i)}
        made.append(create(api, op, "fan", labels=labels, params={"n": i}))
    typed = create(api, op, "typed", params={"day": "2024-01-01", "count": 2}, labels={"t": "x:y"})
    made.append(typed)
    other = create(api, op, "fan", ns="other", labels={"team": "a"})
    made.append(other)
    cancelled = [made[1]["id"], made[4]["id"]]
    for rid in cancelled:
        r = api.post(f"/runs/{rid}/cancel", headers=op)
        assert r.status_code == 202, r.text
        assert r.json()["cancel_requested"] is True

    def ids(**params: Any) -> list[str]:
        r = api.get("/runs", params=params, headers=viewer)
        assert r.status_code == 200, r.text
        return [x["id"] for x in r.json()["items"]]

    newest_first = [r["id"] for r in reversed(made)]
    assert ids() == newest_first
    assert ids(namespace="other") == [other["id"]]
    assert ids(namespace="default", pipeline="typed") == [typed["id"]]
    assert ids(pipeline="fan", namespace="default") == [r["id"] for r in reversed(made[:7])]
    assert ids(state="cancelled") == cancelled[::-1]
    assert ids(state=["cancelled", "queued"]) == newest_first
    assert ids(state="succeeded") == []
    assert ids(label="team:a") == [other["id"], made[5]["id"], made[3]["id"], made[1]["id"]]
    assert ids(label=["team:a", "idx:3"]) == [made[3]["id"]]
    assert ids(label="t:x:y") == [typed["id"]]  # the value may hold ':'
    assert ids(label="team:a", namespace="default", state="cancelled") == [made[1]["id"]]

    created = [dt.datetime.fromisoformat(r["created_at"]) for r in made]
    after, before = created[2], created[5]
    assert ids(created_after=after.isoformat(), created_before=before.isoformat()) == [
        made[4]["id"], made[3]["id"], made[2]["id"],
    ]  # fmt: skip
    naive = after.astimezone(dt.UTC).replace(tzinfo=None).isoformat()
    assert ids(created_after=naive)[-1] == made[2]["id"]  # naive = UTC
    extremes = {"created_after": "0001-01-01T00:00:00Z", "created_before": "9999-12-31T23:59:59Z"}
    assert ids(**extremes) == newest_first
    assert ids(created_before="2000-01-01T00:00:00Z") == []

    counts = api.get("/runs/counts", params={"namespace": "default"}, headers=viewer).json()
    assert counts == {"counts": {"queued": 6, "cancelled": 2}, "total": 8}

    # pages: no duplicates, nothing missing, and the last page has no cursor
    for size in (1, 2, 3, 4, 9, 10):
        seen: list[str] = []
        cursor = None
        for _ in range(20):
            params: dict[str, Any] = {"limit": size}
            if cursor:
                params["cursor"] = cursor
            page = api.get("/runs", params=params, headers=viewer).json()
            assert len(page["items"]) <= size
            seen += [x["id"] for x in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == newest_first, size
    page = api.get("/runs", params={"limit": 2, "state": "queued"}, headers=viewer).json()
    rest = api.get(
        "/runs",
        params={"limit": 50, "state": "queued", "cursor": page["next_cursor"]},
        headers=viewer,
    ).json()
    assert [x["id"] for x in page["items"] + rest["items"]] == [
        r for r in newest_first if r not in cancelled
    ]
    assert rest["next_cursor"] is None


def test_list_rejects_bad_filters(api: TestClient, viewer: H) -> None:
    for params, path in [
        ({"limit": 0}, "limit"),
        ({"limit": 201}, "limit"),
        ({"state": "sleeping"}, "state"),
        ({"cursor": "!!!"}, "cursor"),
        ({"cursor": "abcd"}, "cursor"),
        ({"label": "nocolon"}, "label"),
        ({"label": "bad key:x"}, "label"),
        ({"created_after": "yesterday"}, "created_after"),
        ({"namespace": "bad name"}, "namespace"),
    ]:
        err = error(api.get("/runs", params=params, headers=viewer), 422)
        assert err["details"][0]["path"].startswith(path), (params, err)


def test_bad_run_ids_are_404(api: TestClient, op: H, dev: H) -> None:
    register(api, dev, spec_json("fan"))
    run = create(api, op, "fan")
    for bad in ("zz", "not-hex-at-all", "abc", "0" * 32, "f" * 40, run["id"][:5]):
        for method, suffix in [
            ("GET", ""),
            ("GET", "/logs"),
            ("GET", "/logs/stream"),
            ("GET", "/events"),
            ("GET", "/outputs"),
            ("POST", "/cancel"),
            ("POST", "/rerun"),
        ]:
            r = api.request(method, f"/runs/{bad}{suffix}", headers=op)
            assert error(r, 404)["code"] == "not_found", (bad, suffix)


# -- cancel and re-run ----------------------------------------------------------------


def test_cancel_and_rerun(
    api: TestClient, store: Store, settings: Settings, op: H, dev: H, tmp_path: Path
) -> None:
    register(api, dev, spec_json("fan"))
    register(api, dev, spec_json("rerunnable"))
    queued = create(api, op, "fan")
    r = api.post(f"/runs/{queued['id']}/cancel", headers=op)
    assert r.status_code == 202 and r.json()["state"] == "cancelled"
    err = error(api.post(f"/runs/{queued['id']}/cancel", headers=op), 409)
    assert "already cancelled" in err["message"]

    flag = tmp_path / "flag"
    flag.write_text("x")
    failed = create(api, op, "rerunnable", params={"flag": str(flag)})
    drain(store, settings, failed["id"])
    got = api.get(f"/runs/{failed['id']}", headers=op).json()
    assert got["state"] == "failed" and got["failed_node"] == "maybe_fail"
    error(api.post(f"/runs/{failed['id']}/cancel", headers=op), 409)
    flag.unlink()
    r = api.post(f"/runs/{failed['id']}/rerun", headers=op)
    assert r.status_code == 201, r.text
    again = r.json()
    assert again["rerun_of"] == failed["id"] and again["id"] != failed["id"]
    assert again["params"] == failed["params"] and again["created"] is True
    drain(store, settings, again["id"])
    done = api.get(f"/runs/{again['id']}", headers=op).json()
    assert done["state"] == "succeeded"
    assert {n["name"]: n["reused"] for n in done["nodes"]}["ok"] is True
    err = error(api.post(f"/runs/{again['id']}/rerun", headers=op), 409)
    assert "succeeded" in err["message"]
    error(api.post(f"/runs/{again['id']}/rerun", headers={}), 401)


# -- logs and events -------------------------------------------------------------------


def sse(text: str) -> list[dict[str, str]]:
    events = []
    for block in text.split("\n\n"):
        ev: dict[str, str] = {}
        for line in block.split("\n"):
            if line and not line.startswith(":"):
                k, _, v = line.partition(":")
                ev[k] = v.removeprefix(" ")
        if ev and set(ev) != {"retry"}:
            events.append(ev)
    return events


def test_logs_json_sse_and_events(
    api: TestClient, store: Store, settings: Settings, op: H, dev: H, viewer: H
) -> None:
    register(api, dev, spec_json("fan"))
    run = create(api, op, "fan", params={"n": 5})
    rid = run["id"]
    logs = api.get(f"/runs/{rid}/logs", headers=viewer).json()
    assert logs == {"items": [], "next_after": 0, "run_state": "queued"}

    worker = threading.Thread(target=drain, args=(store, settings, rid))
    worker.start()
    # The stream follows the run while it runs and ends with `event: end`.
    with api.stream("GET", f"/runs/{rid}/logs/stream", headers=viewer) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        text = "".join(resp.iter_text())
    worker.join(60)
    events = sse(text)
    assert events[-1]["event"] == "end"
    assert json.loads(events[-1]["data"]) == {"run_id": rid, "state": "succeeded"}
    lines = [json.loads(e["data"]) for e in events[:-1]]
    assert [int(e["id"]) for e in events[:-1]] == [x["id"] for x in lines]
    assert len(lines) == 6  # three shards, stdout and stderr each
    assert sorted(x["line"] for x in lines if x["stream"] == "stdout") == [
        f"shard {i} of 3" for i in range(3)
    ]

    all_json = api.get(f"/runs/{rid}/logs", headers=viewer).json()
    assert all_json["run_state"] == "succeeded"
    assert [x["id"] for x in all_json["items"]] == [x["id"] for x in lines]
    assert all_json["next_after"] == lines[-1]["id"]
    step = api.get(f"/runs/{rid}/logs", params={"step": "square_sum-2"}, headers=viewer).json()
    assert sorted(x["line"] for x in step["items"]) == ["shard 1 of 3", "to stderr"]
    page = api.get(
        f"/runs/{rid}/logs", params={"after": lines[1]["id"], "limit": 2}, headers=viewer
    )
    assert [x["id"] for x in page.json()["items"]] == [lines[2]["id"], lines[3]["id"]]
    tail = api.get(f"/runs/{rid}/logs", params={"tail": 1}, headers=viewer).json()
    assert [x["id"] for x in tail["items"]] == [lines[-1]["id"]]

    # Resuming: Last-Event-ID (or ?after=) skips what was seen
    resumed = api.get(
        f"/runs/{rid}/logs/stream", headers={**viewer, "Last-Event-ID": str(lines[3]["id"])}
    )
    assert [json.loads(e["data"])["id"] for e in sse(resumed.text) if "id" in e] == [
        lines[4]["id"], lines[5]["id"],
    ]  # fmt: skip
    by_query = api.get(
        f"/runs/{rid}/logs/stream", params={"after": lines[-1]["id"]}, headers=viewer
    )
    assert [e.get("event") for e in sse(by_query.text)] == ["end"]
    one_step = api.get(f"/runs/{rid}/logs/stream", params={"step": "numbers"}, headers=viewer)
    assert [e.get("event") for e in sse(one_step.text)] == ["end"]

    evs = api.get(f"/runs/{rid}/events", headers=viewer).json()
    types = [e["type"] for e in evs["items"]]
    assert types[0] == "RunQueued" and types[-1] == "RunSucceeded"
    assert evs["next_after"] == evs["items"][-1]["seq"]
    assert all(e["run_id"] == rid and len(e["id"]) == 32 for e in evs["items"])
    later = api.get(
        f"/runs/{rid}/events", params={"after": evs["items"][2]["seq"], "limit": 3}, headers=viewer
    ).json()
    assert later["items"] == evs["items"][3:6]
    error(api.get(f"/runs/{rid}/events", params={"limit": 0}, headers=viewer), 422)


def test_stream_keeps_alive_while_quiet(
    api: TestClient, op: H, dev: H, viewer: H, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ferryman.api.routes import runs as runs_routes

    monkeypatch.setattr(runs_routes, "KEEPALIVE_SECONDS", 0.1)
    monkeypatch.setattr(runs_routes, "POLL_SECONDS", 0.05)
    register(api, dev, spec_json("fan"))
    rid = create(api, op, "fan")["id"]

    def cancel_soon() -> None:
        time.sleep(0.6)
        api.post(f"/runs/{rid}/cancel", headers=op)

    t = threading.Thread(target=cancel_soon)
    t.start()
    text = api.get(f"/runs/{rid}/logs/stream", headers=viewer).text
    t.join()
    assert text.count(": keep-alive") >= 2
    assert sse(text)[-1]["event"] == "end"


# -- compatibility route ------------------------------------------------------------


def test_compat_route(api: TestClient, store: Store, op: H, dev: H, viewer: H) -> None:
    """The old API's answers, as its clients parse them."""
    register(api, dev, TYPED, ns="kubeflow-user")
    body = {"day": "2024-01-01", "count": 3, "webhook_uri": "https://hooks.example.com/x"}
    r = api.post("/kubeflow-user/pipelines/run/typed/", json=body, headers=op)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["status"] == "ok"
    got = answer["response"]
    assert got["message"] == "Pipeline run created successfully." and got["error_logs"] == ""
    assert got["run_url"].endswith(f"/runs/{got['run_id']}") and got["name"]
    run = api.get(f"/runs/{got['run_id']}", headers=op).json()
    assert run["params"] == {"day": "2024-01-01", "count": 3, "lang": "en", "callback": None}
    assert run["has_webhook"] is True and run["trigger"]["kind"] == "compat"
    with store.read() as conn:
        opts = conn.execute(sa.select(runs.c.options).where(runs.c.id == got["run_id"])).scalar()
    assert opts == {"webhook_url": "https://hooks.example.com/x", "webhook_format": "compat"}

    # without the trailing slash, a dashed upper-case name, and idempotent
    body2 = {"day": "2024-01-02", "count": 1, "channel": "C1", "slack_thread": "1.2"}
    headers = {**op, "Idempotency-Key": "compat-1"}
    a = api.post("/kubeflow-user/pipelines/run/Typed", json=body2, headers=headers)
    b = api.post("/kubeflow-user/pipelines/run/typed/", json=body2, headers=headers)
    assert (a.status_code, b.status_code) == (200, 200), a.text
    assert a.json()["response"]["run_id"] == b.json()["response"]["run_id"]
    run = api.get(f"/runs/{a.json()['response']['run_id']}", headers=op).json()
    assert run["has_webhook"] is False
    assert (run["slack_channel"], run["slack_thread"]) == ("C1", "1.2")
    assert "channel" not in run["params"]  # not a parameter of the pipeline: an option only

    def old_error(r: Any, status: int = 400) -> str:
        assert r.status_code == status, r.text
        assert r.json()["status"] == "error"
        return str(r.json()["response"]["message"])

    post = api.post
    msg = old_error(post("/kubeflow-user/pipelines/run/typed/", json={"count": 0}, headers=op))
    assert "count:" in msg and "day:" in msg  # every error, with its path
    url = "/kubeflow-user/pipelines/run/typed/"
    msg = old_error(post(url, json={**body2, "webhook_uri": "nope"}, headers=op))
    assert "webhook_uri" in msg
    msg = old_error(post("/kubeflow-user/pipelines/run/typed/", json=[1], headers=op))
    assert "JSON object" in msg
    hdr = {**op, "Content-Type": "application/json"}
    msg = old_error(post("/kubeflow-user/pipelines/run/typed/", content=b"{not json", headers=hdr))
    assert "not JSON" in msg
    msg = old_error(post("/kubeflow-user/pipelines/run/typd/", json={}, headers=op))
    assert "typed" in msg  # the closest name
    r = post("/kubeflow-user/pipelines/run/typed/", json=body2)
    assert r.status_code == 401 and "detail" in r.json()
    assert r.headers["WWW-Authenticate"] == "Bearer"
    r = post(url, json=body2, headers={"Authorization": "Bearer x"})
    assert r.status_code == 401 and "detail" in r.json()
    r = post("/kubeflow-user/pipelines/run/typed/", json=body2, headers=viewer)
    assert r.status_code == 403 and "operator" in r.json()["detail"]


def test_compat_health(api: TestClient, store: Store) -> None:
    r = api.get("/")
    assert r.status_code == 200
    assert r.json()["status"] == "ok" and r.json()["response"]["message"]


def test_openapi_documents_the_routes(api: TestClient) -> None:
    paths = api.get("/openapi.json").json()["paths"]
    for p in [
        "/namespaces/{ns}/pipelines",
        "/namespaces/{ns}/pipelines/{name}",
        "/namespaces/{ns}/pipelines/{name}/versions",
        "/namespaces/{ns}/pipelines/{name}/runs",
        "/runs",
        "/runs/{run_id}",
        "/runs/{run_id}/cancel",
        "/runs/{run_id}/rerun",
        "/runs/{run_id}/logs",
        "/runs/{run_id}/logs/stream",
        "/runs/{run_id}/events",
        "/{namespace}/pipelines/run/{pipeline_name}/",
    ]:
        assert p in paths, p
    assert "/{namespace}/pipelines/run/{pipeline_name}" not in paths


def test_nul_characters_are_refused_not_500(api: TestClient, op: H, dev: H) -> None:
    """PostgreSQL cannot store NUL in text or JSON: a 422, never a server error."""
    register(api, dev, TYPED)
    err = error(
        api.post(
            "/namespaces/default/pipelines/typed/runs",
            json={"params": {"day": "2024-01-01", "count": 1, "lang": "e\u0000n"}},
            headers=op,
        ),
        422,
    )
    assert err["details"] == [{"path": "params.lang", "reason": "contains a NUL character"}]
    for body in ({"labels": {"a": "x\u0000"}}, {"slack_channel": "C\u0000"}):
        error(api.post("/namespaces/default/pipelines/typed/runs", json=body, headers=op), 422)
    err = error(
        api.post(
            "/namespaces/default/pipelines", json={**TYPED, "description": "\u0000"}, headers=dev
        ),
        422,
    )
    assert err["details"][0]["path"] == "description"
    run = create(api, op, "typed", params={"day": "2024-01-01", "count": 1})
    error(api.get(f"/runs/{run['id']}/logs", params={"step": "a\u0000"}, headers=op), 422)
    error(api.get("/runs", params={"label": "a:\u0000"}, headers=op), 422)

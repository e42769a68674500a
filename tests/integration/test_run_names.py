"""Run names (issue 12, item 10): every run gets a short readable handle,
unique in its namespace, usable wherever a run id is; a handle that matches
several runs lists them. Through the services, a real HTTP server and the
Python client, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.api_support import fast_hashing, live_server

from ferryman.api.app import create_app
from ferryman.client import ApiError, Client
from ferryman.dsl.loader import load_pipeline
from ferryman.errors import Ambiguous, Conflict, NotFound
from ferryman.services import creation
from ferryman.services.auth import Role, create_api_token, create_user
from ferryman.services.catalog import register
from ferryman.services.queries import get_run, list_runs, resolve_run_id
from ferryman.services.runs import RunService
from ferryman.settings import Settings
from ferryman.store.engine import Store

pytestmark = pytest.mark.usefixtures(fast_hashing.__name__)

PIPES = Path(__file__).parent.parent / "pipelines" / "basic.py"
NAME = re.compile(r"^[a-z]+-[a-z]+-[0-9]{2}$")


def start(store: Store, n: int, namespace: str = "default") -> list[dict[str, str]]:
    with store.write() as conn:
        pv = register(conn, namespace, load_pipeline(f"{PIPES}:fan"))
    svc = RunService(store)
    return [svc.start_version(pv, {"n": 2}).record for _ in range(n)]


@pytest.fixture
def client(settings: Settings, store: Store) -> Iterator[Client]:
    with store.write() as conn:
        user = create_user(conn, "olga", "a-long-password-1", Role.OPERATOR)
        _, token = create_api_token(conn, user["id"], "tests")
    with live_server(create_app(settings, store)) as url, Client(url, token=token) as c:
        yield c


def test_every_run_gets_a_distinct_readable_name(store: Store, client: Client) -> None:
    started = start(store, 40)
    names = [r["name"] for r in started]
    assert all(NAME.match(n) for n in names), names
    assert len(set(names)) == 40
    # shown by every read: the listing, the run, the client
    listed = {r.id: r.name for r in client.iter_runs(page_size=15)}
    assert listed == {r["id"]: r["name"] for r in started}
    one = started[7]
    got = client.get_run(one["name"])  # a name works wherever an id does
    assert (got.id, got.name) == (one["id"], one["name"])
    assert client.logs(one["name"]).run_state == "queued"
    assert client.outputs(one["name"]).run_id == one["id"]
    assert client.events(one["name"]).items[0].run_id == one["id"]
    cancelled = client.cancel_run(one["name"])
    assert (cancelled.id, cancelled.name) == (one["id"], one["name"])
    with pytest.raises(ApiError) as exc:
        client.get_run("brave-nobody-00")
    assert exc.value.status == 404 and exc.value.code == "not_found"


def test_a_name_clash_picks_another_name(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Names are unique per namespace: a clash (here forced) is retried in
    the same transaction, which the clash does not break."""
    wanted = iter(["brave-otter-42", "brave-otter-42", "brave-otter-42", "calm-heron-17"])
    monkeypatch.setattr(creation, "run_name", lambda attempt=0: next(wanted))
    first = start(store, 1)[0]
    second = start(store, 1)[0]  # two clashes, then a free name
    assert (first["name"], second["name"]) == ("brave-otter-42", "calm-heron-17")
    with store.read() as conn:
        assert get_run(conn, second["id"])["name"] == "calm-heron-17"
        assert len(get_run(conn, second["id"])["nodes"]) == 5  # the run was made whole

    monkeypatch.setattr(creation, "run_name", lambda attempt=0: "brave-otter-42")
    other = start(store, 1, namespace="team")[0]  # another namespace: the same name is free
    assert other["name"] == "brave-otter-42"
    with store.read() as conn, pytest.raises(Ambiguous) as amb:
        resolve_run_id(conn, "brave-otter-42")
    assert {c["id"] for c in amb.value.details} == {first["id"], other["id"]}
    assert "several namespaces" in amb.value.message
    with pytest.raises(Conflict, match="no free run name"):
        start(store, 1)  # every try clashes: refused, nothing half-made
    with store.read() as conn:
        assert len(list_runs(conn, namespace="default")) == 2


def test_an_ambiguous_prefix_lists_the_candidates(store: Store, client: Client) -> None:
    started = start(store, 3)
    prefix = common_prefix([r["id"] for r in started])
    if len(prefix) < 6:
        pytest.skip("the runs straddle a change of the id's sixth digit (every 4.6 hours)")
    prefix = prefix[:6]
    with store.read() as conn, pytest.raises(Ambiguous) as amb:
        resolve_run_id(conn, prefix)
    assert isinstance(amb.value, NotFound)  # still a 404 for whoever only knows NotFound
    with pytest.raises(ApiError) as exc:
        client.get_run(prefix)
    assert exc.value.status == 404 and exc.value.code == "ambiguous"
    assert prefix in exc.value.message and "give more of the id, or the run's name" in (
        exc.value.message
    )
    candidates = exc.value.details
    assert [c["id"] for c in candidates] == [r["id"] for r in reversed(started)]  # newest first
    assert [c["name"] for c in candidates] == [r["name"] for r in reversed(started)]
    assert {c["pipeline"] for c in candidates} == {"fan"}
    assert all(c["namespace"] == "default" and c["created_at"] for c in candidates)
    # a unique prefix, the whole id and the name all name the same run
    one = started[0]
    with store.read() as conn:
        assert resolve_run_id(conn, one["id"]) == one["id"]
        assert resolve_run_id(conn, one["name"]) == one["id"]
        assert resolve_run_id(conn, one["name"].upper()) == one["id"]


def common_prefix(ids: list[str]) -> str:
    """The leading characters ``ids`` share."""
    shared = ""
    for chars in zip(*ids, strict=False):
        if len(set(chars)) > 1:
            break
        shared += chars[0]
    return shared

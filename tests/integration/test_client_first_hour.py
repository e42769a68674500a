"""The Python client and the REST API where a new user tripped (issue 12,
items 8 and 14): a YAML pipeline registered from its text, every namespace's
pipelines, one attempt's logs, and how JSON parameters are typed. A real
HTTP server on loopback, SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.api_support import fast_hashing, live_server

from ferryman.api.app import create_app
from ferryman.client import ApiError, AsyncClient, Client
from ferryman.engine.worker import Worker
from ferryman.services.auth import Role, create_api_token, create_user
from ferryman.settings import Settings
from ferryman.store.engine import Store

pytestmark = pytest.mark.usefixtures(fast_hashing.__name__)

ROOT = Path(__file__).resolve().parents[2]
PIPES = ROOT / "tests" / "pipelines" / "basic.py"
TYPED = """\
name: typed
params:
  who: {type: string, default: world}
  n: {type: integer, default: 1}
steps:
  - name: a
    function: os:getcwd
"""


@pytest.fixture
def served(settings: Settings, store: Store) -> Iterator[tuple[str, str]]:
    with store.write() as conn:
        user = create_user(conn, "dev", "a-long-password-1", Role.DEVELOPER)  # registers code
        _, token = create_api_token(conn, user["id"], "tests")
    with live_server(create_app(settings, store)) as url:
        yield url, token


def test_register_a_yaml_pipeline_from_its_text(
    served: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, token = served
    monkeypatch.chdir(ROOT / "examples")  # etl.yaml's function files are relative
    text = (ROOT / "examples" / "etl.yaml").read_text()
    with Client(url, token=token) as c:
        reg = c.register_pipeline("default", text)
        assert (reg.name, reg.created) == ("etl", True)
        assert c.register_pipeline("default", text).created is False  # same definition
        detail = c.get_pipeline("default", "etl")
        assert [p.name for p in detail.params] == ["source", "limit", "lang", "day"]
        json_text = '{"name": "tiny", "steps": [{"name": "a", "function": "os:getcwd"}]}'
        assert c.register_pipeline("default", json_text).name == "tiny"
        with pytest.raises(ValueError, match="invalid pipeline file <text>"):
            c.register_pipeline("default", "name: bad\nsteps: []\nretries: x\n")


async def test_async_client_registers_yaml_text(served: tuple[str, str]) -> None:
    url, token = served
    async with AsyncClient(url, token=token) as c:
        reg = await c.register_pipeline("team", TYPED)
        assert reg.name == "typed"
        page = await c.list_pipelines()
        assert [(p.namespace, p.name) for p in page.items] == [("team", "typed")]


def test_pipelines_of_every_namespace(served: tuple[str, str]) -> None:
    url, token = served
    with Client(url, token=token) as c:
        c.register_pipeline("b-team", TYPED)
        c.register_pipeline("a-team", TYPED)
        c.register_pipeline("a-team", f"{PIPES}:fan")
        every = c.list_pipelines()
        assert [(p.namespace, p.name) for p in every.items] == [
            ("a-team", "fan"), ("a-team", "typed"), ("b-team", "typed"),
        ]  # fmt: skip
        assert [p.name for p in c.list_pipelines("b-team").items] == ["typed"]


def test_one_attempts_logs(
    served: tuple[str, str], store: Store, settings: Settings, tmp_path: Path
) -> None:
    url, token = served
    with Client(url, token=token) as c:
        c.register_pipeline("default", f"{PIPES}:retrying")
        run = c.create_run("default", "retrying", {"counter": str(tmp_path / "n")})
        t = threading.Thread(target=lambda: Worker(store, settings).run_until({run.id}, 60))
        t.start()
        t.join(90)
        assert c.wait(run.name, timeout=30).state == "succeeded"
        second = c.logs(run.name, attempt=2).items
        assert second and {x.attempt for x in second} == {2}
        assert any("attempt 2 fails" in x.line for x in second)
        assert c.logs(run.id, step="flaky", attempt=9).items == []


def test_json_parameters_are_typed_as_given(served: tuple[str, str]) -> None:
    """Over the API a number is never taken for a text parameter (the error
    says how to send it); text holding a number is taken for a number."""
    url, token = served
    with Client(url, token=token) as c:
        c.register_pipeline("default", TYPED)
        with pytest.raises(ApiError) as exc:
            c.create_run("default", "typed", {"who": 5, "nn": 2})
        assert exc.value.status == 422 and exc.value.code == "invalid_params"
        assert {d["path"]: d["reason"] for d in exc.value.details} == {
            "who": 'Input should be a valid string (got the number 5: send it as text, "5")',
            "nn": "unknown parameter (did you mean 'n'? known: who, n)",
        }
        run = c.create_run("default", "typed", {"who": "5", "n": "7"})
        assert run.params == {"who": "5", "n": 7}

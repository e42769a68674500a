"""The CLI in scripts and pipes (issue 12, items 10, 13 and 14), as the real
``ferryman`` command prints it: output that is not a terminal is never cut or
wrapped; ``--json`` on every listing and ``get``; ``runs logs --tail/--attempt``;
``runs ls --label``; run names; flags shown as flags in help; parameters
typed by their declared type, with hints."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import typer.main
from tests.cli_support import cli_environment, ferryman
from typer.testing import CliRunner

from ferryman.cli.app import app

#: Each test starts several CLI processes, each a fresh interpreter.
pytestmark = pytest.mark.timeout(300)

PIPES = Path(__file__).resolve().parents[1] / "pipelines" / "basic.py"
LONG = "a-pipeline-with-a-name-much-longer-than-any-narrow-terminal-could-show"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    # COLUMNS as narrow as a phone's terminal: output to a pipe must ignore it
    return cli_environment(tmp_path / "home", f"sqlite:///{tmp_path}/s.db", COLUMNS="40")


def run_json(env: dict[str, str], *args: str) -> object:
    r = ferryman(env, *args, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def write_long_pipeline(tmp_path: Path) -> Path:
    path = tmp_path / "long.py"
    path.write_text(
        "from ferryman import pipeline, step\n\n\n"
        "@step(infrastructure='inline')\n"
        "def hello(name: str) -> str:\n"
        "    print('hello', name)\n"
        "    return name\n\n\n"
        f"@pipeline(name={LONG!r})\n"
        "def p(name: str = 'world', items: list[str] | None = None) -> None:\n"
        "    hello(name)\n"
    )
    return path


def test_output_to_a_pipe_is_never_cut_or_wrapped(env: dict[str, str], tmp_path: Path) -> None:
    path = write_long_pipeline(tmp_path)
    namespace = "a-namespace-that-is-long-too"
    for _ in range(3):
        assert ferryman(env, "run", str(path), "-n", namespace).returncode == 0
    runs = run_json(env, "runs", "ls")
    assert isinstance(runs, list) and len(runs) == 3
    ls = ferryman(env, "runs", "ls")
    lines = ls.stdout.splitlines()
    assert len(lines) == 4, ls.stdout  # a header and one line per run: nothing wrapped
    assert "…" not in ls.stdout and "\x1b[" not in ls.stdout  # nothing cut, no colours
    for run, line in zip(runs, lines[1:], strict=True):
        assert isinstance(run, dict)
        # every field whole, in order, separated by spaces only (awk can cut them out)
        assert line.split() == [
            run["name"], f"{namespace}/{LONG}", "succeeded", "1/1",
            *run["created_at"][:19].split("T"), line.split()[6], run["id"],
        ]  # fmt: skip
    assert lines[0].split() == ["name", "pipeline", "state", "steps", "created", "duration",
                                "run", "id"]  # fmt: skip
    get = ferryman(env, "runs", "get", str(runs[0]["name"]))  # type: ignore[index]
    assert f"{namespace}/{LONG}" in get.stdout and "…" not in get.stdout
    pls = ferryman(env, "pipelines", "ls")
    assert LONG in pls.stdout and "…" not in pls.stdout and len(pls.stdout.splitlines()) == 2


def test_json_on_every_listing_and_get(env: dict[str, str], tmp_path: Path) -> None:
    assert ferryman(env, "run", "examples/etl.py:etl", "-p", "limit=2").returncode == 0
    (run,) = run_json(env, "runs", "ls")  # type: ignore[misc]
    assert set(run) >= {"id", "name", "namespace", "pipeline", "state", "params", "created_at"}
    detail = run_json(env, "runs", "get", run["name"])
    assert isinstance(detail, dict) and detail["id"] == run["id"]
    assert [n["name"] for n in detail["nodes"]][:2] == ["extract", "transform"]
    (pipe,) = run_json(env, "pipelines", "ls")  # type: ignore[misc]
    assert pipe["name"] == "etl" and pipe["versions"] == 1
    desc = run_json(env, "pipelines", "describe", "etl")
    assert isinstance(desc, dict)
    assert [p["name"] for p in desc["params"]] == ["source", "limit", "lang"]
    assert desc["params_schema"]["properties"]["limit"]["minimum"] == 1
    (version,) = run_json(env, "pipelines", "versions", "etl")  # type: ignore[misc]
    assert version["version"] == pipe["latest_version"]
    lines = ferryman(env, "runs", "logs", run["id"], "--json").stdout.splitlines()
    logs = [json.loads(line) for line in lines]  # JSON Lines
    assert {"node", "attempt", "stream", "line"} <= set(logs[0])
    assert any(x["line"] == "extracting 2 rows from demo" for x in logs)
    add = ferryman(env, "subscriptions", "add", "ops", "http://127.0.0.1:9/hook")
    assert add.returncode == 0, add.stderr
    (sub,) = run_json(env, "subscriptions", "ls")  # type: ignore[misc]
    assert sub["name"] == "ops" and sub["url"] == "http://127.0.0.1:9/hook"
    assert "whsec_" not in json.dumps(sub)  # the secret is never shown
    deliveries = run_json(env, "subscriptions", "deliveries")
    assert isinstance(deliveries, list)


def test_logs_tail_attempt_and_label_filters(env: dict[str, str], tmp_path: Path) -> None:
    counter = tmp_path / "counter"
    r = ferryman(env, "run", f"{PIPES}:retrying", "-p", f"counter={counter}", "-l", "team=ml",
                 "-l", "env=test")  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    run_id = r.stdout.split()[1]
    second = ferryman(env, "runs", "logs", run_id, "--attempt", "2")
    assert "attempt 2 fails" in second.stdout
    assert "attempt 1 fails" not in second.stdout
    assert all(line.startswith("[flaky#2]") for line in second.stdout.splitlines())
    everything = ferryman(env, "runs", "logs", run_id).stdout.splitlines()
    tail = ferryman(env, "runs", "logs", run_id, "--tail", "2").stdout.splitlines()
    assert len(everything) > 2 and tail == everything[-2:]
    tail_json = ferryman(env, "runs", "logs", run_id, "--tail", "1", "--json").stdout
    assert json.loads(tail_json)["line"] == everything[-1].split("] ", 1)[1]
    assert ferryman(env, "run", "examples/etl.py:etl", "-l", "team=data").returncode == 0
    ml = run_json(env, "runs", "ls", "--label", "team=ml")
    assert [x["id"] for x in ml] == [run_id]  # type: ignore[index]
    both = run_json(env, "runs", "ls", "-l", "team=ml", "-l", "env=test")
    assert [x["id"] for x in both] == [run_id]  # type: ignore[index]
    assert run_json(env, "runs", "ls", "-l", "team=ml", "-l", "env=prod") == []
    bad = ferryman(env, "runs", "ls", "--label", "team")
    assert bad.returncode == 2 and "key=value" in bad.stderr


def test_run_names_in_the_cli(env: dict[str, str]) -> None:
    first = ferryman(env, "run", "examples/etl.py:etl", "-p", "limit=2")
    assert first.returncode == 0, first.stderr
    header = first.stdout.splitlines()[0]
    m = re.match(r"^run ([0-9a-f]{32}) \(([a-z]+-[a-z]+-[0-9]{2})\) of default/etl ", header)
    assert m, header
    run_id, name = m.groups()
    for args in (["runs", "get", name], ["runs", "logs", name, "--step", "extract"]):
        r = ferryman(env, *args)
        assert r.returncode == 0, r.stderr
    assert f"run {run_id} ({name})" in ferryman(env, "runs", "get", name).stdout
    second = ferryman(env, "run", "examples/etl.py:etl", "-p", "limit=2")
    other = second.stdout.split()[1]
    prefix = common_prefix([run_id, other])
    if len(prefix) < 6:
        pytest.skip("the runs straddle a change of the id's sixth digit")
    amb = ferryman(env, "runs", "get", prefix[:6])
    assert amb.returncode == 2
    assert f"run id prefix '{prefix[:6]}' matches several runs" in amb.stderr
    # the candidates: id, name, pipeline and creation time, newest first
    rows = [line.split() for line in amb.stderr.splitlines()[2:]]
    assert [row[0] for row in rows] == [other, run_id]
    assert rows[1][1] == name and rows[1][2] == "default/etl"
    assert re.match(r"^\d{4}-\d\d-\d\d$", rows[1][3])


def test_flags_are_shown_as_flags_in_help() -> None:
    """``--follow`` is a flag: help shows no value for it (it showed ``<bool>``)."""
    group = typer.main.get_command(app)
    runner = CliRunner()
    seen = 0

    def walk(cmd: object, path: list[str]) -> None:
        nonlocal seen
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                walk(sub, [*path, name])
            return
        r = runner.invoke(app, [*path, "--help"])  # every command, in this process
        assert r.exit_code == 0, (path, r.output)
        assert "<bool>" not in r.output, (path, r.output)
        seen += 1

    walk(group, [])
    assert seen > 20
    # and as a user sees it
    logs = ferryman(cli_environment(Path("/nonexistent")), "runs", "logs", "--help").stdout
    assert "<bool>" not in logs
    assert re.search(r"^\s+-f, --follow\s+Keep printing", logs, re.M), logs
    assert re.search(r"^\s+-t, --tail <int", logs, re.M), logs


def test_params_are_typed_by_their_declared_type_with_hints(
    env: dict[str, str], tmp_path: Path
) -> None:
    path = write_long_pipeline(tmp_path)
    ok = ferryman(env, "run", str(path), "-p", "name=5", "-p", 'items=["a","b"]')
    assert ok.returncode == 0, ok.stderr
    (listed,) = run_json(env, "runs", "ls")  # type: ignore[misc]
    assert listed["params"] is None  # lists leave parameters out
    run = run_json(env, "runs", "get", listed["id"])
    assert run["params"] == {"name": "5", "items": ["a", "b"]}  # type: ignore[index]
    bad = ferryman(env, "run", str(path), "-p", "nmae=x", "-p", "items=a,b")
    assert bad.returncode == 2
    assert "nmae: unknown parameter (did you mean 'name'? known: name, items)" in bad.stderr
    assert """items: Input should be a valid list (on the command line a list is JSON: """ in (
        bad.stderr
    )
    assert """-p items='["a","b"]')""" in bad.stderr
    # a params file holds JSON: a number for a text parameter is refused, as over the API
    pf = tmp_path / "p.json"
    pf.write_text(json.dumps({"name": 5}))
    f = ferryman(env, "run", str(path), "--params-file", str(pf))
    assert f.returncode == 2
    assert 'name: Input should be a valid string (got the number 5: send it as text, "5")' in (
        f.stderr
    )


def common_prefix(ids: list[str]) -> str:
    """The leading characters ``ids`` share."""
    shared = ""
    for chars in zip(*ids, strict=False):
        if len(set(chars)) > 1:
            break
        shared += chars[0]
    return shared

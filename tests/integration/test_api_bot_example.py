"""``examples/api_bot/``: the scheduled bot that replaces a cron container.

A fake status API (a real HTTP server on loopback) checks the key header;
the example runs through the real ``ferryman`` command on the embedded
SQLite database: a local run, the declared schedule's ``run --now`` picked
up by a ``ferryman worker`` process, and the exported CronJob checked by
``kubernetes-validate --strict``. The key is then looked for everywhere
ferryman keeps or prints something: it is not there."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.cli_support import ROOT, cli_environment, ferryman, popen

EXAMPLE = ROOT / "examples" / "api_bot"
VALIDATE = Path(sys.executable).parent / "kubernetes-validate"
KEY = "sk-status-bot-7f3a9c21e4d04b1d"
INCIDENTS = [{"id": i, "title": f"incident {i}", "severity": "high"} for i in range(7)]


class FakeStatusApi(ThreadingHTTPServer):
    """The API the bot calls: every request is recorded with whether it
    carried the right key; a wrong or missing key is a 401."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.calls: list[dict[str, Any]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/api"


class _Handler(BaseHTTPRequestHandler):
    server: FakeStatusApi

    def _answer(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self) -> dict[str, Any]:
        size = int(self.headers.get("content-length") or 0)
        call = {
            "method": self.command, "path": self.path,
            "key_ok": self.headers.get("x-api-key") == KEY,
            "authorization": self.headers.get("authorization"),
            "idempotency_key": self.headers.get("idempotency-key"),
            "body": json.loads(self.rfile.read(size)) if size else None,
        }  # fmt: skip
        self.server.calls.append(call)
        return call

    def do_GET(self) -> None:
        call = self._record()
        if not call["key_ok"]:
            return self._answer(401, {"error": "bad key"})
        if call["path"] != "/api/v1/projects/ferry-ops/incidents?state=open":
            return self._answer(404, {"error": "no such path"})
        self._answer(200, INCIDENTS)

    def do_POST(self) -> None:
        call = self._record()
        if not call["key_ok"]:
            return self._answer(401, {"error": "bad key"})
        if call["path"] != "/api/v1/channels/ops-digest/messages":
            return self._answer(404, {"error": "no such path"})
        self._answer(201, {"id": f"msg-{len(self.server.calls)}"})

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def api() -> Iterator[FakeStatusApi]:
    server = FakeStatusApi()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def bot(tmp_path: Path, api: FakeStatusApi) -> Path:
    """The example, copied as it is, with its ``bot.json`` pointed at the fake API."""
    d = tmp_path / "api_bot"
    shutil.copytree(EXAMPLE, d, ignore=shutil.ignore_patterns("__pycache__"))
    config = json.loads((d / "bot.json").read_text())
    assert config["api_url"].startswith("https://")  # the example's own value
    (d / "bot.json").write_text(json.dumps({**config, "api_url": api.url}))
    return d


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A CLI environment on the embedded SQLite database in its FERRYMAN_HOME."""
    return cli_environment(tmp_path / "home", FERRYMAN_SECRETS_RESOLVERS="env,store")


class Seen:
    """Everything the commands printed, to look for the key in at the end."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env, self.text = env, ""

    def __call__(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        r = ferryman(self.env, *args, stdin=stdin)
        self.text += r.stdout + r.stderr
        return r


def _store_key(cli: Seen) -> None:
    r = cli("secrets", "set", "STATUS_API_KEY", stdin=KEY)
    assert r.returncode == 0, r.stderr
    assert "STATUS_API_KEY" in cli("secrets", "ls").stdout


def _run_id(stdout: str) -> str:
    return stdout.split()[1]  # "run <id> (<name>) of ..."


def _everything_kept(cli: Seen, run_id: str) -> str:
    """The run as every command shows it, plus the raw database files."""
    parts = [cli("runs", "get", run_id, "--json").stdout]
    parts.append(cli("runs", "logs", run_id).stdout)
    parts.append(cli("runs", "outputs", run_id).stdout)
    home = Path(cli.env["FERRYMAN_HOME"])
    parts += [p.read_bytes().decode("latin-1") for p in home.rglob("*") if p.is_file()
              and p.name != "secret_key"]  # fmt: skip
    return "\n".join(parts)


def test_local_run_posts_the_digest_with_the_key(
    bot: Path, api: FakeStatusApi, env: dict[str, str]
) -> None:
    cli = Seen(env)
    _store_key(cli)
    r = cli("run", f"{bot}/bot.py:api_bot", "-p", f"config=@{bot}/bot.json")
    assert r.returncode == 0, r.stdout + r.stderr
    run_id = _run_id(r.stdout)
    assert [(c["method"], c["path"]) for c in api.calls] == [
        ("GET", "/api/v1/projects/ferry-ops/incidents?state=open"),
        ("POST", "/api/v1/channels/ops-digest/messages"),
    ]
    assert all(c["key_ok"] and c["authorization"] is None for c in api.calls)
    text = api.calls[1]["body"]["text"]
    assert text.startswith("ferry-ops: 7 open incident(s)\n- [high] incident 0")
    assert text.endswith("... and 2 more") and text.count("\n- ") == 5
    assert api.calls[1]["idempotency_key"].startswith("digest-")
    out = json.loads(cli("runs", "outputs", run_id, "deliver").stdout)
    assert out == {"action": "post_digest", "posted": True, "message_id": "msg-2",
                   "digest": text}  # fmt: skip
    assert KEY not in _everything_kept(cli, run_id) + cli.text


def test_report_action_from_a_params_file_only_returns_the_digest(
    bot: Path, api: FakeStatusApi, env: dict[str, str], tmp_path: Path
) -> None:
    cli = Seen(env)
    _store_key(cli)
    config = json.loads((bot / "bot.json").read_text())
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"config": {**config, "action": "report", "max_items": 2}}))
    r = cli("run", f"{bot}/bot.py:api_bot", "--params-file", str(params))
    assert r.returncode == 0, r.stdout + r.stderr
    assert [c["method"] for c in api.calls] == ["GET"]  # nothing posted
    out = json.loads(cli("runs", "outputs", _run_id(r.stdout), "deliver").stdout)
    assert out["posted"] is False and out["digest"].endswith("... and 5 more")


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"action": "post_sumary"}, "$.action: 'post_sumary' is not one of ['post_digest', "),
        ({"chanel": "ops"}, "Additional properties are not allowed ('chanel' was unexpected)"),
        ({"channel": None}, "'channel' is a required property"),
    ],
)  # fmt: skip
def test_a_bad_config_fails_clearly_before_any_call(
    bot: Path, api: FakeStatusApi, env: dict[str, str], tmp_path: Path,
    change: dict[str, Any], says: str,
) -> None:  # fmt: skip
    config = {**json.loads((bot / "bot.json").read_text()), **change}
    config = {k: v for k, v in config.items() if v is not None}
    (tmp_path / "bad.json").write_text(json.dumps(config))
    r = ferryman(env, "run", f"{bot}/bot.py:api_bot", "-p", f"config=@{tmp_path}/bad.json")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "invalid parameters" in r.stderr and says in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert api.calls == []


def test_a_wrong_key_fails_the_run_without_showing_either_key(
    bot: Path, api: FakeStatusApi, env: dict[str, str]
) -> None:
    cli = Seen(env)
    wrong = "sk-wrong-0d9e8f7a6b5c4d3e"
    assert cli("secrets", "set", "STATUS_API_KEY", stdin=wrong).returncode == 0
    r = cli("run", f"{bot}/bot.py:api_bot", "-p", f"config=@{bot}/bot.json")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "failed step: fetch_incidents" in r.stdout + r.stderr
    assert "401" in r.stdout + r.stderr
    assert len(api.calls) == 1  # a 4xx is not retried
    assert wrong not in _everything_kept(cli, _run_id(r.stdout)) + cli.text


def _wait_for_end(cli: Seen, run_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run: dict[str, Any] = json.loads(cli("runs", "get", run_id, "--json").stdout)
        if run["state"] in ("succeeded", "failed", "cancelled") or time.monotonic() > deadline:
            return run
        time.sleep(0.5)


def test_the_declared_schedule_run_now_and_its_cronjob(
    bot: Path, api: FakeStatusApi, env: dict[str, str], tmp_path: Path
) -> None:
    cli = Seen(env)
    _store_key(cli)
    r = cli("deploy", f"{bot}/bot.py")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "api-bot-weekday" in cli("schedules", "ls").stdout
    spec = json.loads(cli("schedules", "get", "api-bot-weekday", "--json").stdout)
    assert (spec["cron"], spec["timezone"]) == ("0 8 * * 1-5", "Europe/London")
    assert spec["params"]["config"]["api_url"] == api.url
    items = json.loads(cli("schedules", "next", "api-bot-weekday", "-n", "3", "--json").stdout)
    assert len(items["items"]) == 3
    r = cli("schedules", "run", "api-bot-weekday", "--now")
    assert r.returncode == 0 and "started run" in r.stdout, r.stderr
    run_id = r.stdout.split()[-1]
    worker = popen(env, "worker", "--concurrency", "2")
    try:
        run = _wait_for_end(cli, run_id)
    finally:
        worker.send_signal(signal.SIGTERM)
        w_out, w_err = worker.communicate(timeout=60)
    assert run["state"] == "succeeded", run
    assert [c["method"] for c in api.calls] == ["GET", "POST"]
    assert all(c["key_ok"] for c in api.calls)
    (tick,) = json.loads(cli("schedules", "runs", "api-bot-weekday", "--json").stdout)
    assert tick["kind"] == "manual" and tick["run_state"] == "succeeded"

    out = tmp_path / "api-bot.yaml"
    r = cli("export", "cronjob", "api-bot-weekday", "--image", "registry.example/api-bot:1",
            "--ref", "/app/bot.py:api_bot", "--secret-name", "api-bot", "-o", str(out))  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    v = subprocess.run([str(VALIDATE), "--strict", str(out)], capture_output=True, text=True,
                       timeout=120)  # fmt: skip
    assert v.returncode == 0, v.stdout + v.stderr
    m = yaml.safe_load(out.read_text())
    assert (m["spec"]["schedule"], m["spec"]["timeZone"]) == ("0 8 * * 1-5", "Europe/London")
    job = m["spec"]["jobTemplate"]["spec"]
    assert job["activeDeadlineSeconds"] == 300 and m["spec"]["concurrencyPolicy"] == "Forbid"
    (c,) = job["template"]["spec"]["containers"]
    assert c["command"][:3] == ["ferryman", "run", "/app/bot.py:api_bot"]
    assert {"name": "STATUS_API_KEY", "valueFrom": {"secretKeyRef": {
        "name": "api-bot", "key": "STATUS_API_KEY"}}} in c["env"]  # fmt: skip
    kept = _everything_kept(cli, run_id) + cli.text + w_out + w_err + out.read_text()
    assert KEY not in kept


def _readme_commands() -> list[str]:
    text = (EXAMPLE / "README.md").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.startswith("$ ")]


def test_the_readme_shows_what_the_commands_do(env: dict[str, str]) -> None:
    """The README's bad-config example prints what the README says, and its
    commands name the example's real files, pipeline and schedule."""
    lines = (EXAMPLE / "README.md").read_text(encoding="utf-8").splitlines()
    (i,) = [n for n, line in enumerate(lines) if "post_sumary" in line and line.startswith("$")]
    r = ferryman(env, *shlex.split(lines[i][2:])[1:])
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [lines[i + 1], lines[i + 2]]
    commands = _readme_commands()
    needed = [
        "ferryman secrets set STATUS_API_KEY",
        "ferryman run examples/api_bot/bot.py:api_bot",
        "--params-file",
        "ferryman deploy examples/api_bot/bot.py",
        "ferryman schedules next api-bot-weekday",
        "ferryman schedules run api-bot-weekday --now",
        "ferryman export cronjob api-bot-weekday",
    ]
    for need in needed:
        assert any(need in c for c in commands), need
    for c in commands:
        for word in shlex.split(c[2:].split("|")[-1]):
            if word.startswith(("examples/", "config=@examples/")):
                assert (ROOT / word.split("@")[-1].split(":")[0]).is_file(), word


def test_the_exported_cronjob_command_runs_the_bot(
    bot: Path, api: FakeStatusApi, env: dict[str, str], tmp_path: Path
) -> None:
    """The exported container's command, run as a process with the env the
    kubelet would give it (the secretKeyRef filled in): it calls the API with
    the key and exits 0."""
    assert ferryman(env, "deploy", f"{bot}/bot.py").returncode == 0
    out = tmp_path / "local.yaml"
    r = ferryman(env, "export", "cronjob", "api-bot-weekday", "--image", "bots:1",
                 "--ref", f"{bot}/bot.py:api_bot", "-o", str(out))  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    m = yaml.safe_load(out.read_text())
    (c,) = m["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert c["command"][0] == "ferryman" and KEY not in out.read_text()
    pod = {k: v for k, v in os.environ.items() if not k.startswith("FERRYMAN_")}
    for e in c["env"]:
        if "valueFrom" in e:
            pod[e["name"]] = KEY
        else:
            pod[e["name"]] = e["value"].replace("/tmp", str(tmp_path / "pod-tmp"))
    p = subprocess.run([sys.executable, "-m", "ferryman", *c["command"][1:]], env=pod,
                       capture_output=True, text=True, timeout=180)  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    assert [(c["method"], c["key_ok"]) for c in api.calls] == [("GET", True), ("POST", True)]
    assert KEY not in p.stdout + p.stderr

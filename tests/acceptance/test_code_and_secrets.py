"""Acceptance: a real ``ferryman server`` attacked from the outside (issue 11,
items 1 and 7), on SQLite and PostgreSQL.

Item 1: an operator registered a pipeline whose step was ``os:environ.copy``
(or ``subprocess:getoutput``); the run's outputs, readable by viewers, held
the JWT secret, the admin password, the webhook secret and the Slack token.
Now registering code needs the developer role; a step's environment is an
allow-list (no ``FERRYMAN_*`` variable but its own); the server process is
not dumpable, so a step cannot read its environment through ``/proc``.

Item 7: a step that prints its declared secret split over two lines,
upper-cased, base64- or hex-encoded, returns it and fails with it: no form of
it reaches the logs, the outputs, the error or the events.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_server_restart import Server, http, server_cmd, server_env

from ferryman.notify.signing import generate_secret

assert server_env  # the fixture, used by name

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux /proc"),
]

ROOT = Path(__file__).resolve().parents[2]
ADMIN_PASSWORD = "code-and-secrets-admin-pw"
PASSWORD = "a-member-password"

# ferryman's own secrets, as a production server is given them.
SERVER_SECRETS = {
    "FERRYMAN_JWT_SECRET": secrets.token_urlsafe(32),
    "FERRYMAN_ADMIN_PASSWORD": ADMIN_PASSWORD,
    "FERRYMAN_WEBHOOK_SECRET": generate_secret(),
    "FERRYMAN_SLACK_BOT_TOKEN": "xoxb-0000000000-" + secrets.token_hex(12),
    "FERRYMAN_SECRET_KEY": secrets.token_urlsafe(32),
}

# The attack of the issue: dump the environment, and the server's through /proc.
DUMP_ENV = {
    "name": "dump",
    "infrastructure": "process",
    "steps": [
        {"name": "environ", "function": {"module": "os", "qualname": "environ.copy"}},
        {
            "name": "shell",
            "function": {"module": "subprocess", "qualname": "getoutput"},
            "inputs": {
                # env of the step; then the server's (the grandparent of this shell)
                "cmd": "env; gp=$(cut -d' ' -f4 /proc/$PPID/stat); "
                "tr '\\0' '\\n' < /proc/$gp/environ 2>&1; echo server=$gp"
            },
        },
    ],
}


#: Whom the server runs as: an unprivileged user, as in production (root may
#: read any process's environment, non-dumpable or not).
AS_USER = "nobody" if os.geteuid() == 0 else None


class UnprivilegedServer(Server):
    """A ``ferryman server`` started as ``AS_USER`` (the current user when not root)."""

    def start(self, *args: str) -> Server:
        self.n += 1
        self.started_at = time.monotonic()
        with (
            open(self.logdir / f"server{self.n}.out", "wb") as out,
            open(self.logdir / f"server{self.n}.err", "wb") as err,
        ):
            self.proc = subprocess.Popen(
                [*server_cmd(), *args], env=self.env, stdin=subprocess.DEVNULL,
                stdout=out, stderr=err, user=AS_USER, extra_groups=[] if AS_USER else None,
            )  # fmt: skip
        return self


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory the server's user can use (pytest's tmp_path is root's only)."""
    path = Path(tempfile.mkdtemp(prefix="ferryman-acceptance-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def server(
    db_url: str, server_env: Callable[..., Server], shared_dir: Path
) -> Iterator[Callable[..., Server]]:
    """Start a server as ``AS_USER`` with ``extra`` variables; its home and an
    SQLite database in ``shared_dir``."""
    made: list[Server] = []

    def make(**extra: str) -> Server:
        base = server_env(**extra)
        url = db_url
        if url.startswith("sqlite"):
            url = f"sqlite:///{shared_dir / 'ferryman.db'}"
        env = {**base.env, "FERRYMAN_HOME": str(shared_dir / "home"), "FERRYMAN_DATABASE_URL": url}
        made.append(UnprivilegedServer(env, base.logdir, base.port).start())
        return made[-1]

    yield make
    for srv in made:
        srv.terminate()


def login(srv: Server, username: str, password: str) -> str:
    status, body = http(
        "POST", f"{srv.url}/token", form={"username": username, "password": password}
    )
    assert status == 200, body
    return str(body["access_token"])


def members(srv: Server) -> dict[str, str]:
    """A token per role: admin, developer, operator, viewer."""
    admin = login(srv, "admin", ADMIN_PASSWORD)
    tokens = {"admin": admin}
    for role in ("developer", "operator", "viewer"):
        status, body = http(
            "POST",
            f"{srv.url}/users",
            body={"username": f"{role}-1", "password": PASSWORD, "role": role},
            token=admin,
        )
        assert status == 201 and body["role"] == role, body
        tokens[role] = login(srv, f"{role}-1", PASSWORD)
    return tokens


def wait_ended(srv: Server, run_id: str, token: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status, run = http("GET", f"{srv.url}/runs/{run_id}", token=token)
        assert status == 200, run
        if run["state"] in ("succeeded", "failed", "cancelled"):
            return dict(run)
        assert time.monotonic() < deadline, run
        time.sleep(0.2)


def everything_shown(srv: Server, run_id: str, token: str) -> str:
    """All a viewer can read about a run, as one text."""
    parts = []
    for path in ("", "/outputs", "/logs", "/events"):
        status, body = http("GET", f"{srv.url}/runs/{run_id}{path}", token=token)
        assert status == 200, body
        parts.append(json.dumps(body))
    return "\n".join(parts)


def test_only_developers_register_code_and_steps_get_no_server_secrets(
    server: Callable[..., Server], tmp_path: Path
) -> None:
    srv = server(**SERVER_SECRETS)
    srv.wait_healthy()
    tokens = members(srv)
    register = f"{srv.url}/namespaces/default/pipelines"
    for role in ("viewer", "operator"):
        status, body = http("POST", register, body=DUMP_ENV, token=tokens[role])
        assert status == 403, body
        assert "developer" in body["error"]["message"]
    # the CLI path: `ferryman deploy --server` as an operator
    spec_file = tmp_path / "dump.yaml"
    spec_file.write_text(
        "name: dump\ninfrastructure: process\nsteps:\n"
        "  - {name: environ, function: 'os:environ.copy'}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERRYMAN_")}
    env.update(FERRYMAN_HOME=str(tmp_path / "cli"), FERRYMAN_TOKEN=tokens["operator"])
    deploy = subprocess.run(
        [sys.executable, "-m", "ferryman", "deploy", str(spec_file), "--server", srv.url],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert deploy.returncode != 0 and "developer" in deploy.stderr, deploy.stdout + deploy.stderr
    status, body = http("POST", register, body=DUMP_ENV, token=tokens["developer"])
    assert status == 201, body
    status, body = http("POST", register, body=DUMP_ENV, token=tokens["admin"])
    assert status == 200 and body["created"] is False, body

    # Operators run what developers registered; viewers read what it produced.
    status, run = http(
        "POST",
        f"{srv.url}/namespaces/default/pipelines/dump/runs",
        body={},
        token=tokens["operator"],
    )
    assert status == 201, run
    done = wait_ended(srv, run["id"], tokens["viewer"])
    assert done["state"] == "succeeded", done
    shown = everything_shown(srv, run["id"], tokens["viewer"])
    for name, value in SERVER_SECRETS.items():
        assert value not in shown, f"{name} leaked"
    _, outputs = http("GET", f"{srv.url}/runs/{run['id']}/outputs", token=tokens["viewer"])
    environ = outputs["outputs"]["environ"]
    own = {"FERRYMAN_RUN_ID", "FERRYMAN_STEP", "FERRYMAN_ATTEMPT", "FERRYMAN_PIPELINE",
           "FERRYMAN_NAMESPACE", "FERRYMAN_STEP_PAYLOAD", "FERRYMAN_PROCESS_TOKEN",
           "FERRYMAN_LIFELINE_FD"}  # fmt: skip
    assert {k for k in environ if k.startswith("FERRYMAN_")} <= own, sorted(environ)
    assert environ["FERRYMAN_RUN_ID"] == run["id"] and "PATH" in environ
    shell = outputs["outputs"]["shell"]
    assert "server=" in shell and "Permission denied" in shell, shell
    assert "FERRYMAN_DATABASE_URL" not in shell and "FERRYMAN_JWT_SECRET" not in shell


LEAKY = textwrap.dedent(
    """
    import base64, os

    def leak():
        token = os.environ["PIPELINE_TOKEN"]
        half = len(token) // 2
        print("split:", token[:half])
        print(token[half:], "(end)")
        print("upper:", token.upper())
        print("b64:", base64.b64encode(b"user:" + token.encode()).decode())
        print("b64url:", base64.urlsafe_b64encode(b"x" + token.encode()).decode().rstrip("="))
        print("hex:", token.encode().hex())
        print("slack token seen:", "xoxb-1234567890-" + "a" * 24)
        return {"token": token, "lower": token.lower(), "nested": [{"hex": token.encode().hex()}]}

    def fail():
        raise RuntimeError("cannot use " + os.environ["PIPELINE_TOKEN"].upper())
    """
)


def test_no_form_of_a_declared_secret_reaches_what_viewers_read(
    server: Callable[..., Server], shared_dir: Path
) -> None:
    token = "pt-" + secrets.token_urlsafe(30)
    srv = server(FERRYMAN_ADMIN_PASSWORD=ADMIN_PASSWORD, PIPELINE_TOKEN=token)
    srv.wait_healthy()
    tokens = members(srv)
    code = shared_dir / "leaky.py"
    code.write_text(LEAKY)
    code.chmod(0o644)

    def step(name: str, fn: str, after: list[str]) -> dict[str, Any]:
        return {"name": name, "function": {"file": str(code), "qualname": fn},
                "secrets": ["PIPELINE_TOKEN"], "depends_on": after}  # fmt: skip

    spec = {"name": "leaky", "infrastructure": "process",
            "steps": [step("leak", "leak", []), step("fail", "fail", ["leak"])]}  # fmt: skip
    status, body = http(
        "POST", f"{srv.url}/namespaces/default/pipelines", body=spec, token=tokens["developer"]
    )
    assert status == 201, body
    status, run = http(
        "POST",
        f"{srv.url}/namespaces/default/pipelines/leaky/runs",
        body={},
        token=tokens["operator"],
    )
    assert status == 201, run
    done = wait_ended(srv, run["id"], tokens["viewer"])
    assert done["state"] == "failed" and done["failed_node"] == "fail", done
    shown = everything_shown(srv, run["id"], tokens["viewer"])
    raw = token.encode()
    forms = {
        "exact": token, "upper": token.upper(), "lower": token.lower(), "hex": raw.hex(),
        "first half": token[: len(token) // 2], "second half": token[len(token) // 2 :],
        "base64 core": base64.b64encode(b"user:" + raw).decode()[8:-8],
        "url-safe core": base64.urlsafe_b64encode(b"x" + raw).decode()[4:-4],
        "slack": "xoxb-1234567890-" + "a" * 24,
    }  # fmt: skip
    for what, form in forms.items():
        assert form not in shown, f"the {what} form leaked"
    assert "cannot use ********" in shown  # the error is there, masked
    assert "(end)" in shown and "split:" in shown  # the lines are there, masked

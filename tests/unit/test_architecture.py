"""Layering rules: the domain stays pure, step start-up stays light, and the
Python client stays import-light (the rest: import-linter contracts in
pyproject.toml, and tests/unit/test_import_graph.py)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import ferryman.domain

DOMAIN_DIR = Path(ferryman.domain.__file__).resolve().parent
DOMAIN_PACKAGE = "ferryman.domain"

FORBIDDEN = {
    "fastapi",
    "sqlalchemy",
    "httpx",
    "docker",
    "kubernetes",
    "slack_sdk",
    "slack_bolt",
    "starlette",
    "alembic",
    "psycopg",
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(DOMAIN_DIR).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join([DOMAIN_PACKAGE, *parts])


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def imported_modules(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """Every absolute module name imported anywhere in ``source`` (with line numbers).

    Relative imports are resolved against ``module``; ``from x import y`` yields
    both ``x`` and ``x.y`` (``y`` may be a submodule).
    """
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                keep = len(base_parts) - (node.level - 1)
                base = ".".join(base_parts[:keep]) if keep > 0 else ""
                target = ".".join(p for p in (base, node.module or "") if p)
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            found.extend((node.lineno, f"{target}.{alias.name}") for alias in node.names)
    return found


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    problems: list[str] = []
    for line, name in imported_modules(source, module, is_package):
        top = name.split(".")[0]
        if top in FORBIDDEN:
            problems.append(f"{module}:{line} imports {name}")
        # ``from ferryman import x`` yields ``ferryman`` and ``ferryman.x``: only the
        # second tells where it comes from, so the bare package name is let through.
        elif (
            (top == "ferryman" or name == "")
            and name != "ferryman"
            and name != DOMAIN_PACKAGE
            and not name.startswith(DOMAIN_PACKAGE + ".")
        ):
            problems.append(f"{module}:{line} imports {name} (outside {DOMAIN_PACKAGE})")
    return problems


DOMAIN_FILES = sorted(DOMAIN_DIR.rglob("*.py"))


def test_domain_modules_are_found() -> None:
    names = {_module_name(p) for p in DOMAIN_FILES}
    assert {
        "ferryman.domain",
        "ferryman.domain.states",
        "ferryman.domain.events",
        "ferryman.domain.retry",
        "ferryman.domain.spec",
        "ferryman.domain.params",
        "ferryman.domain.validators",
    } <= names


@pytest.mark.parametrize("path", DOMAIN_FILES, ids=lambda p: _module_name(p))
def test_domain_module_is_pure(path: Path) -> None:
    problems = violations(path.read_text(), _module_name(path), _is_package(path))
    assert problems == []


# --------------------------------------------------------------------------- the checker itself


@pytest.mark.parametrize(
    "source",
    [
        "import sqlalchemy",
        "import sqlalchemy.orm as orm",
        "from sqlalchemy import select",
        "from fastapi.routing import APIRouter",
        "import psycopg",
        "from slack_sdk import WebClient",
        "def f():\n    import httpx\n",
        "if TYPE_CHECKING:\n    from docker import DockerClient\n",
        "from ferryman.store import tables",
        "from ferryman.store.engine import Store",
        "from ferryman import settings",
        "from ferryman.errors import Conflict",
        "from .. import errors",
        "from ..store import tables",
        "import ferryman.engine.worker",
    ],
)
def test_checker_catches_violations(source: str) -> None:
    assert violations(source, "ferryman.domain.spec") != []


@pytest.mark.parametrize(
    "source",
    [
        "import json\nimport datetime as dt",
        "from pydantic import BaseModel",
        "from ferryman.domain.retry import RetryPolicy",
        "from ferryman.domain import states",
        "from . import states",
        "from .states import RunState",
        "import ferryman.domain.spec",
        "import httpx_like_name",  # only exact top-level names are forbidden
    ],
)
def test_checker_accepts_clean_imports(source: str) -> None:
    assert violations(source, "ferryman.domain.spec") == []


def test_relative_imports_from_the_package_init() -> None:
    assert violations("from .spec import PipelineSpec", "ferryman.domain", is_package=True) == []
    assert violations("from ..store import x", "ferryman.domain", is_package=True) != []


# --------------------------------------------------------------------------- start-up weight


def _modules_after(code: str, tmp_path: Path) -> dict[str, bool]:
    probe = (
        f"{code}\nimport sys, json\n"
        "print(json.dumps({m: m in sys.modules for m in ('pydantic', 'sqlalchemy', 'httpx')}))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    loaded: dict[str, bool] = json.loads(proc.stdout.strip().splitlines()[-1])
    return loaded


def test_step_process_imports_stay_light(tmp_path: Path) -> None:
    """What a step's process imports must not drag in pydantic or SQLAlchemy."""
    loaded = _modules_after("import ferryman.dsl.decorators, ferryman.runtime.loader", tmp_path)
    assert loaded["pydantic"] is False
    assert loaded["sqlalchemy"] is False


def test_dsl_import_stays_light(tmp_path: Path) -> None:
    loaded = _modules_after(
        "import ferryman\nimport ferryman.dsl.decorators\n"
        "from ferryman import Param, pipeline, step",
        tmp_path,
    )
    assert loaded == {"pydantic": False, "sqlalchemy": False, "httpx": False}


def test_defining_steps_and_pipelines_stays_light(tmp_path: Path) -> None:
    """Decorating is cheap too: only compiling (``.spec()``) needs pydantic."""
    code = (
        "from ferryman import pipeline, step\n"
        "@step\ndef s(x):\n    return x\n"
        "@pipeline\ndef p(n: int = 1):\n    s(n)\n"
        "assert s(2) == 2\n"
    )
    loaded = _modules_after(code, tmp_path)
    assert loaded["pydantic"] is False
    assert loaded["sqlalchemy"] is False


def test_validator_markers_stay_light(tmp_path: Path) -> None:
    loaded = _modules_after("from ferryman import language_code", tmp_path)
    assert loaded["pydantic"] is False


def test_testing_helpers_import_light(tmp_path: Path) -> None:
    """``import ferryman.testing`` (in users' test modules) loads no database
    layer, services or engine: ``run_pipeline`` imports them when called."""
    probe = "import sys, json\nimport ferryman.testing\nprint(json.dumps(sorted(sys.modules)))"
    proc = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    loaded = set(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert "ferryman.testing" in loaded
    heavy = {"sqlalchemy", "alembic", "psycopg", "fastapi", "uvicorn", "docker", "kubernetes"}
    assert sorted({m.split(".")[0] for m in loaded} & heavy) == []
    ours = ("ferryman.store", "ferryman.services", "ferryman.engine", "ferryman.api")
    assert sorted(m for m in loaded if m.startswith(ours)) == []


# --------------------------------------------------------------------------- the Python client

#: What ``import ferryman.client`` may load of ferryman: the client itself, the
#: domain, and the REST API's wire models (not its app, routes or dependencies).
CLIENT_MAY_LOAD = {
    "ferryman",
    "ferryman.api",
    "ferryman.api.accounts",
    "ferryman.api.schemas",
    "ferryman.api.subscription_schemas",
    "ferryman.api.schedule_schemas",
}
CLIENT_MAY_LOAD_UNDER = ("ferryman.client", "ferryman.domain")
CLIENT_MUST_NOT_LOAD = {
    "sqlalchemy",
    "alembic",
    "psycopg",
    "fastapi",
    "starlette",
    "uvicorn",
    "pwdlib",
    "jwt",
    "pydantic_settings",
    "typer",
    "yaml",
    "docker",
    "kubernetes",
    "slack_sdk",
    "aiohttp",
}


def test_client_import_is_light(tmp_path: Path) -> None:
    """``import ferryman.client`` (in a fresh interpreter) loads httpx, pydantic,
    the wire models and the domain: no server, database layer or services."""
    probe = "import sys, json\nimport ferryman.client\nprint(json.dumps(sorted(sys.modules)))"
    proc = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    loaded = set(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert {"httpx", "pydantic", "ferryman.client.sync", "ferryman.api.schemas"} <= loaded
    tops = {m.split(".")[0] for m in loaded}
    assert sorted(tops & CLIENT_MUST_NOT_LOAD) == []
    ours = {m for m in loaded if m == "ferryman" or m.startswith("ferryman.")}
    unexpected = {m for m in ours - CLIENT_MAY_LOAD if not m.startswith(CLIENT_MAY_LOAD_UNDER)}
    assert sorted(unexpected) == []


def test_client_keeps_its_public_names() -> None:
    """What users import from ``ferryman.client`` stays there."""
    import ferryman.client as client

    for name in client.__all__:
        assert getattr(client, name) is not None, name
    users_import = (
        "Client", "AsyncClient", "ApiError", "UNSET", "RunDetail", "LogLinePublic",
        "RunOutputs", "PipelineRegistered", "UserPublic", "SubscriptionPublic",
    )  # fmt: skip
    for name in users_import:
        assert name in client.__all__

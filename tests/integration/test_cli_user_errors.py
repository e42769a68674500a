"""Mistakes a new user makes in a pipeline file, as the real ``ferryman``
command reports them (issue 12, items 6 and 7): the user's error with file,
line and the offending source line, exit code 2; ferryman's own errors stay
internal errors with exit code 1."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tests.cli_support import ROOT, cli_environment, ferryman

#: Each test starts several CLI processes, each a fresh interpreter.
pytestmark = pytest.mark.timeout(300)

STEP = """\
from ferryman import pipeline, step


@step
def one(n: int = 1) -> int:
    return n

"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return cli_environment(tmp_path / "home", f"sqlite:///{tmp_path}/f.db", COLUMNS="200")


def write(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text(STEP + textwrap.dedent(body))
    return path


def assert_users_error(r: subprocess.CompletedProcess[str], where: str, *texts: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert where in r.stderr, r.stderr
    for text in texts:
        assert text in r.stderr, r.stderr
    assert "internal error" not in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("command", ["run", "deploy"])
def test_syntax_error_names_file_line_and_source(
    env: dict[str, str], tmp_path: Path, command: str
) -> None:
    path = write(tmp_path, "syn.py", "@pipeline\ndef p(:\n    one()\n")
    r = ferryman(env, command, str(path))
    assert_users_error(r, f"{path}:9: SyntaxError:", "def p(:")


def test_name_error_at_import(env: dict[str, str], tmp_path: Path) -> None:
    path = write(tmp_path, "imp.py", "LIMIT = undefined_limit + 1\n")
    r = ferryman(env, "run", str(path))
    assert_users_error(
        r, f"{path}:8: NameError: name 'undefined_limit' is not defined", "LIMIT = undefined_limit"
    )


def test_import_error_of_the_users_file(env: dict[str, str], tmp_path: Path) -> None:
    path = write(tmp_path, "mods.py", "import no_such_module_for_ferryman\n")
    r = ferryman(env, "run", str(path))
    assert_users_error(
        r,
        f"{path}:8: ModuleNotFoundError: No module named 'no_such_module_for_ferryman'",
        "import no_such_module_for_ferryman",
    )


def test_errors_in_the_pipeline_body_and_its_annotations(
    env: dict[str, str], tmp_path: Path
) -> None:
    body = write(tmp_path, "body.py", "@pipeline\ndef p(n: int = 2):\n    one(n)\n    helper(n)\n")
    assert_users_error(
        ferryman(env, "run", str(body)),
        f"{body}:11: NameError: name 'helper' is not defined",
        "helper(n)",
    )
    placeholder = write(
        tmp_path, "ph.py", "@pipeline\ndef p(n: int = 2):\n    if n > 1:\n        one(n)\n"
    )
    assert_users_error(
        ferryman(env, "run", str(placeholder)),
        f"{placeholder}:10: <param n> is a placeholder",
        "if n > 1:",
    )
    annotation = write(tmp_path, "ann.py", '@pipeline\ndef p(n: "Undefined" = 2):\n    one()\n')
    assert_users_error(
        ferryman(env, "run", str(annotation)),
        f"{annotation}:9: NameError: name 'Undefined' is not defined",
        'def p(n: "Undefined" = 2):',
    )


def test_invalid_python_defaults_are_refused_like_yaml(env: dict[str, str], tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "defaults.py",
        """\
        from typing import Literal

        from ferryman import Param


        @pipeline
        def p(n: int = "five", mode: Literal["full", "incr"] = "fulll",
              k: int = Param(0, minimum=1)):
            one()
        """,
    )
    r = ferryman(env, "run", str(path))
    assert r.returncode == 2, r.stderr
    assert "pipeline 'p': invalid parameter defaults:" in r.stderr
    assert "params.n.default: Input should be a valid integer" in r.stderr
    assert "params.mode.default: Input should be 'full' or 'incr'" in r.stderr
    assert "params.k.default: Input should be greater than or equal to 1" in r.stderr
    assert ferryman(env, "runs", "ls").stdout.count("default/p") == 0


def test_a_missing_file_is_no_such_file_with_a_suggestion(
    env: dict[str, str], tmp_path: Path
) -> None:
    write(tmp_path, "etl.py", "@pipeline\ndef p():\n    one()\n")
    for given in ("etl.pyy", "etl.yamll", "elt.py"):
        r = ferryman(env, "run", given, cwd=tmp_path)
        assert r.returncode == 2, r.stderr
        assert f"no such file: {given} (did you mean etl.py?)" in r.stderr, r.stderr
        assert "no pipeline" not in r.stderr
    r = ferryman(env, "deploy", "etl.pyy", cwd=tmp_path)
    assert r.returncode == 2 and "no such file: etl.pyy (did you mean etl.py?)" in r.stderr
    r = ferryman(env, "run", "sub/other.py", cwd=tmp_path)
    assert r.returncode == 2 and "no such file: sub/other.py" in r.stderr
    r = ferryman(env, "run", "never-deployed", cwd=tmp_path)  # a name: looked up in the store
    assert r.returncode == 2 and "no pipeline 'never-deployed'" in r.stderr


def test_internal_errors_stay_exit_code_1(env: dict[str, str], tmp_path: Path) -> None:
    """A bug of ferryman's (here: registration raising) is not blamed on the user."""
    path = write(tmp_path, "ok.py", "@pipeline\ndef p():\n    one()\n")
    code = (
        "import sys\n"
        "import ferryman.services.catalog as catalog\n"
        "def broken(*a, **k):\n"
        "    raise AttributeError('bug')\n"
        "catalog.register = broken\n"
        "from ferryman.cli.app import main\n"
        "sys.argv = ['ferryman', 'run', sys.argv[1]]\n"
        "main()\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(path)], env=env, cwd=ROOT,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "internal error: AttributeError: bug" in r.stderr

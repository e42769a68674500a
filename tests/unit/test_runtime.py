"""The step runtime entry point ``python -m ferryman.runtime`` and its loader."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from ferryman.infra import base
from ferryman.runtime import loader

NONCE = "abc123"


def write(tmp_path: Path, source: str, name: str = "stepfile.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return path


def run_runtime(
    function: dict[str, Any] | None,
    inputs: dict[str, Any] | None = None,
    *,
    sys_path: list[str] | None = None,
    raw: str | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop(loader.PAYLOAD_ENV, None)
    if raw is not None:
        env[loader.PAYLOAD_ENV] = raw
    elif function is not None:
        env[loader.PAYLOAD_ENV] = json.dumps(
            {
                "function": function,
                "inputs": inputs or {},
                "nonce": NONCE,
                "sys_path": sys_path or [],
                "run_id": "r1",
                "node": "n",
                "attempt": 1,
            }
        )
    return subprocess.run(
        [sys.executable, "-m", "ferryman.runtime"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
    )


def outcome(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    lines = proc.stdout.rstrip("\n").split("\n")  # not splitlines(): \x1e splits too
    assert lines, proc.stderr
    prefix = loader.RESULT_MARKER + NONCE + " "
    assert lines[-1].startswith(prefix), proc.stdout
    assert sum(line.startswith(loader.RESULT_MARKER) for line in lines) == 1
    result: dict[str, Any] = json.loads(lines[-1][len(prefix) :])
    return result


def test_constants_match_infra_base() -> None:
    assert loader.RESULT_MARKER == base.RESULT_MARKER
    assert loader.PAYLOAD_ENV == base.PAYLOAD_ENV


def test_success_prints_value_last_and_stays_light(tmp_path: Path) -> None:
    f = write(
        tmp_path,
        """
        import sys

        def step(a, b):
            print("working on", a)
            print("a warning", file=sys.stderr)
            heavy = ("pydantic", "ferryman.domain", "ferryman.infra")
            return {"sum": a + b, "heavy": [m for m in heavy if m in sys.modules]}
        """,
    )
    proc = run_runtime({"file": str(f), "qualname": "step"}, {"a": 1, "b": 2})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[0] == "working on 1"
    assert "a warning" in proc.stderr
    assert outcome(proc) == {"ok": True, "value": {"sum": 3, "heavy": []}}


def test_async_function_and_ferryman_wrapper(tmp_path: Path) -> None:
    f = write(
        tmp_path,
        """
        import asyncio

        async def _plain(x):
            await asyncio.sleep(0)
            return x * 2

        class Wrapper:
            def __init__(self, fn):
                self.__ferryman_fn__ = fn
            def __call__(self, **kw):
                raise AssertionError("the wrapper must not be called")

        step = Wrapper(_plain)
        """,
    )
    proc = run_runtime({"file": str(f), "qualname": "step"}, {"x": 21})
    assert proc.returncode == 0, proc.stderr
    assert outcome(proc) == {"ok": True, "value": 42}


def test_module_import_via_sys_path_and_nested_qualname(tmp_path: Path) -> None:
    pkg = tmp_path / "proj" / "mypkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "steps.py").write_text(
        "class Steps:\n    @staticmethod\n    def go(name):\n        return 'hi ' + name\n"
    )
    proc = run_runtime(
        {"module": "mypkg.steps", "qualname": "Steps.go"},
        {"name": "bob"},
        sys_path=[str(tmp_path / "proj")],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert outcome(proc)["value"] == "hi bob"


def test_file_module_is_registered_for_dataclasses_and_pickle(tmp_path: Path) -> None:
    write(tmp_path, "VALUE = 7\n", name="helper_mod.py")
    f = write(
        tmp_path,
        """
        import dataclasses, pickle
        import helper_mod  # a sibling of the step file

        @dataclasses.dataclass
        class Point:
            x: int

        def step():
            p = pickle.loads(pickle.dumps(Point(helper_mod.VALUE)))
            return dataclasses.asdict(p)
        """,
    )
    proc = run_runtime({"file": str(f), "qualname": "step"})
    assert proc.returncode == 0, proc.stderr
    assert outcome(proc)["value"] == {"x": 7}


def test_not_json_serialisable(tmp_path: Path) -> None:
    f = write(tmp_path, "def step():\n    return {'s': {1, 2}}\n")
    proc = run_runtime({"file": str(f), "qualname": "step"})
    assert proc.returncode == 1
    result = outcome(proc)
    assert result["ok"] is False
    assert result["kind"] == "output"
    assert result["error"].startswith("return value of step is not JSON-serialisable: ")
    assert "set" in result["error"]


def test_exception_reports_marker_and_traceback(tmp_path: Path) -> None:
    f = write(
        tmp_path,
        """
        def helper():
            raise ValueError("bad input 42")

        def step():
            print("before")
            helper()
        """,
    )
    proc = run_runtime({"file": str(f), "qualname": "step"})
    assert proc.returncode == 1
    assert outcome(proc) == {
        "ok": False,
        "error": "ValueError: bad input 42",
        "kind": "exception",
        "type": "ValueError",
        "mro": ["ValueError", "Exception", "BaseException"],
    }
    assert proc.stdout.split("\n")[0] == "before"
    assert "Traceback (most recent call last)" in proc.stderr
    assert f'{f}", line 3, in helper' in proc.stderr
    assert "loader.py" not in proc.stderr  # ferryman's own frames are hidden


@pytest.mark.parametrize(
    ("function", "expected"),
    [
        ({"file": "/nonexistent/x.py", "qualname": "f"}, "cannot import /nonexistent/x.py:f: file"),
        ({"module": "no_such_module_xyz", "qualname": "f"}, "no module named 'no_such_module_xyz'"),
        ({"module": "json", "qualname": "nope"}, "has no attribute 'nope'"),
    ],
)
def test_import_failure(function: dict[str, Any], expected: str) -> None:
    proc = run_runtime(function)
    assert proc.returncode == 2
    result = outcome(proc)
    assert result["kind"] == "import"
    assert result["error"].startswith("cannot import ")
    assert expected in result["error"]


def test_import_failure_in_user_module_shows_traceback(tmp_path: Path) -> None:
    f = write(tmp_path, "raise RuntimeError('boom at import')\ndef step():\n    pass\n")
    proc = run_runtime({"file": str(f), "qualname": "step"})
    assert proc.returncode == 2
    assert outcome(proc)["error"] == f"cannot import {f}:step: RuntimeError: boom at import"
    assert "boom at import" in proc.stderr


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, "is not set"),
        ("{not json", "not valid JSON"),
        ('{"function": {"qualname": "f"}, "nonce": "x"}', "module or file"),
        ('{"function": {"module": "m", "qualname": "f"}}', "nonce"),
        ("@/nonexistent/payload.json", "cannot read the payload file"),
    ],
)
def test_bad_payload(raw: str | None, expected: str) -> None:
    proc = run_runtime(None, raw=raw)
    assert proc.returncode == 2
    assert expected in proc.stderr
    assert loader.RESULT_MARKER not in proc.stdout


def test_payload_from_file(tmp_path: Path) -> None:
    f = write(tmp_path, "def step(blob):\n    return len(blob)\n")
    payload = tmp_path / "payload.json"
    payload.write_text(
        json.dumps(
            {
                "function": {"file": str(f), "qualname": "step"},
                "inputs": {"blob": "x" * 300_000},
                "nonce": NONCE,
            }
        )
    )
    proc = run_runtime(None, raw="@" + str(payload))
    assert proc.returncode == 0, proc.stderr
    assert outcome(proc)["value"] == 300_000


# -- loader, in process --------------------------------------------------------------


def test_loader_caches_by_path_and_reloads_changed_files(tmp_path: Path) -> None:
    f = write(tmp_path, "def step():\n    return 1\n", name="cached_step_mod.py")
    fn1 = loader.load_function({"file": str(f), "qualname": "step"})
    fn2 = loader.load_function({"file": str(f), "qualname": "step"})
    assert fn1 is fn2
    f.write_text("def step():\n    return 2\n")
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    fn3 = loader.load_function({"file": str(f), "qualname": "step"})
    assert fn3() == 2
    assert fn3.__module__ == fn1.__module__
    assert sys.modules[fn3.__module__].__file__ == str(f)


def test_loader_avoids_module_name_clashes(tmp_path: Path) -> None:
    f = write(tmp_path, "def step():\n    return 'mine'\n", name="json.py")
    fn = loader.load_function({"file": str(f), "qualname": "step"})
    assert fn() == "mine"
    assert fn.__module__ != "json"
    assert sys.modules["json"] is json
    assert pickle.loads(pickle.dumps(fn)) is fn


def test_run_step_rejects_locals() -> None:
    outcome_json, code = loader.run_step(
        {"module": "json", "qualname": "f.<locals>.g"}, {}, [], lambda _: None
    )
    assert code == 2
    assert "inside other functions" in json.loads(outcome_json)["error"]

"""The inline infrastructure: python steps in the worker's threads."""

from __future__ import annotations

import json
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ferryman.domain.spec import FunctionRef, PythonStep
from ferryman.infra.base import EXIT_KILLED, OutputCapture, StepLaunch
from ferryman.infra.inline import InlineConfig, InlineInfrastructure


class Collector:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []
        self._cond = threading.Condition()

    def __call__(self, stream: str, line: str) -> None:
        with self._cond:
            self.lines.append((stream, line))
            self._cond.notify_all()

    def stream(self, name: str) -> list[str]:
        with self._cond:
            return [line for s, line in self.lines if s == name]

    def wait_for(self, line: str, timeout: float = 5.0) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: any(x == line for _, x in self.lines), timeout)


counter = iter(range(10**9))


def make_launch(
    tmp_path: Path,
    source: str,
    *,
    inputs: dict[str, Any] | None = None,
    secrets: dict[str, str] | None = None,
    qualname: str = "step",
) -> StepLaunch:
    f = tmp_path / f"inline_steps_{next(counter)}.py"
    f.write_text(textwrap.dedent(source))
    return StepLaunch(
        run_id="run-1",
        node="s",
        attempt=1,
        pipeline="pipe",
        namespace="team",
        step=PythonStep(name="s", function=FunctionRef(file=str(f), qualname=qualname)),
        inputs=inputs or {},
        params={},
        nonce="nonce-7",
        secrets=secrets or {},
    )


@pytest.fixture
def infra() -> Iterator[InlineInfrastructure]:
    infra = InlineInfrastructure(InlineConfig(max_workers=4))
    yield infra
    infra.close(wait=True)


def run(
    infra: InlineInfrastructure, launch: StepLaunch
) -> tuple[int, dict[str, Any] | None, Collector]:
    logs = Collector()
    capture = OutputCapture(launch.nonce, logs, launch.mask)
    identifier = infra.start(launch, capture)
    assert identifier.startswith("inline:")
    result = infra.watch(identifier)
    assert result.identifier == identifier
    outcome = json.loads(capture.result_json) if capture.result_json else None
    return result.status_code, outcome, logs


def test_success_captures_prints_and_value(infra: InlineInfrastructure, tmp_path: Path) -> None:
    launch = make_launch(
        tmp_path,
        """
        import sys

        def step(a, b):
            print("adding", a, b)
            sys.stderr.write("to stderr\\n")
            print("no newline at the end", end="")
            return a + b
        """,
        inputs={"a": 2, "b": 3},
    )
    stdout_before = sys.stdout
    code, outcome, logs = run(infra, launch)
    assert code == 0
    assert outcome == {"ok": True, "value": 5}
    assert logs.stream("stdout") == ["adding 2 3", "no newline at the end"]
    assert logs.stream("stderr") == ["to stderr"]
    assert sys.stdout is stdout_before  # the proxy is removed once no step runs


def test_async_step_and_ferryman_wrapper(infra: InlineInfrastructure, tmp_path: Path) -> None:
    launch = make_launch(
        tmp_path,
        """
        import asyncio

        async def plain(x):
            await asyncio.sleep(0)
            return [x]

        def step():
            raise AssertionError("the wrapper must not be called")

        step.__ferryman_fn__ = plain
        """,
        inputs={"x": "y"},
    )
    code, outcome, _ = run(infra, launch)
    assert (code, outcome) == (0, {"ok": True, "value": ["y"]})


def test_other_threads_output_is_not_captured(
    infra: InlineInfrastructure, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flag = tmp_path / "flag"
    launch = make_launch(
        tmp_path,
        """
        import os, time

        def step(flag):
            print("inside the step")
            while not os.path.exists(flag):
                time.sleep(0.005)
        """,
        inputs={"flag": str(flag)},
    )
    logs = Collector()
    identifier = infra.start(launch, logs)
    logs.wait_for("inside the step")
    print("from the test thread")
    flag.touch()
    assert infra.watch(identifier).status_code == 0
    out = capsys.readouterr().out
    assert "from the test thread" in out
    assert "inside the step" not in out
    assert "from the test thread" not in repr(logs.lines)


def test_parallel_steps_keep_their_own_output(infra: InlineInfrastructure, tmp_path: Path) -> None:
    source = """
        import time

        def step(name):
            for i in range(20):
                print(f"{name} {i}")
                time.sleep(0.001)
            return name
        """
    launches = [make_launch(tmp_path, source, inputs={"name": n}) for n in ("a", "b", "c")]
    collectors = [Collector() for _ in launches]
    ids = [infra.start(la, c) for la, c in zip(launches, collectors, strict=True)]
    for identifier in ids:
        assert infra.watch(identifier).status_code == 0
    for name, logs in zip(("a", "b", "c"), collectors, strict=True):
        assert logs.stream("stdout")[:-1] == [f"{name} {i}" for i in range(20)]


def test_non_json_value(infra: InlineInfrastructure, tmp_path: Path) -> None:
    launch = make_launch(tmp_path, "def step():\n    return b'bytes'\n")
    code, outcome, _ = run(infra, launch)
    assert code == 1
    assert outcome is not None
    assert outcome["kind"] == "output"
    assert "not JSON-serialisable" in outcome["error"]


def test_import_failure(infra: InlineInfrastructure, tmp_path: Path) -> None:
    launch = make_launch(tmp_path, "def other():\n    pass\n")
    code, outcome, _ = run(infra, launch)
    assert code == 2
    assert outcome is not None
    assert outcome["kind"] == "import"
    assert outcome["error"].startswith("cannot import ")


def test_kill_abandons_the_thread_and_discards_the_late_result(
    infra: InlineInfrastructure, tmp_path: Path
) -> None:
    flag = tmp_path / "flag"
    launch = make_launch(
        tmp_path,
        """
        import os, time

        def step(flag):
            print("started")
            while not os.path.exists(flag):
                time.sleep(0.005)
            print("too late")
            return "late"
        """,
        inputs={"flag": str(flag)},
    )
    logs = Collector()
    capture = OutputCapture(launch.nonce, logs, launch.mask)
    identifier = infra.start(launch, capture)
    logs.wait_for("started")
    results: list[Any] = []
    watcher = threading.Thread(target=lambda: results.append(infra.watch(identifier)))
    watcher.start()
    started = time.monotonic()
    infra.kill(identifier, grace_seconds=10)
    watcher.join(2)
    assert time.monotonic() - started < 1
    assert results[0].status_code == EXIT_KILLED
    assert "abandoned" in results[0].reason
    flag.touch()
    infra.close(wait=True)  # the thread ends on its own
    assert logs.stream("stdout") == ["started"]
    assert not capture.has_result


def test_kill_cancels_a_queued_step(tmp_path: Path) -> None:
    infra = InlineInfrastructure(InlineConfig(max_workers=1))
    flag = tmp_path / "flag"
    blocker = make_launch(
        tmp_path,
        "import os, time\n\ndef step(flag):\n    while not os.path.exists(flag):\n"
        "        time.sleep(0.005)\n",
        inputs={"flag": str(flag)},
    )
    queued = make_launch(tmp_path, "def step():\n    print('ran')\n")
    first = infra.start(blocker, Collector())
    logs = Collector()
    second = infra.start(queued, logs)
    infra.kill(second, grace_seconds=0)
    assert infra.watch(second).status_code == EXIT_KILLED
    flag.touch()
    assert infra.watch(first).status_code == 0
    infra.close(wait=True)
    assert logs.lines == []

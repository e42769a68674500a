"""The backends under contract, and how each one is driven in this test session
(the ``backend`` fixture, made available by this directory's conftest.py).

``backend`` is parametrised over every infrastructure: ``process``,
``inline``, ``docker`` (a real daemon: skipped with the reason when none can
be started, except under ``CI=true``, where it fails), ``kubernetes`` (the
kmock emulator with the Job controller of ``tests/k8s_fake.py``) and
``ferryman.testing.FakeInfrastructure``. A ``Backend`` knows only how to make
an instance and how to build a step the instance can run here (the image, the
mounts, the cluster's address); what an infrastructure *can* do is read from
its declared capabilities (``kinds``, ``records_identifier``,
``reattachable``, ``kill_signals``, ``separates_streams``, ``applies_env``),
never from its name.

A new infrastructure joins the suite with one more ``Backend`` here.
"""

from __future__ import annotations

import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ferryman.domain.spec import ContainerStep, FunctionRef, PythonStep, StepSpec, TaskStep
from ferryman.infra.base import EXIT_KILLED, Infrastructure, StepLaunch
from ferryman.testing import FakeInfrastructure, FakeOutcome

ROOT = Path(__file__).resolve().parents[2]
RUN_LABEL = "io.ferryman.run-id"

#: What the step of each kind built by ``Backend.step_of_kind`` prints.
KIND_LINE = "hello from a {kind} step"
#: The exit code of the failing step of each kind built by ``Backend.failing_step``.
FAILING_CODES = {"python": 1, "container": 3}  # python: the runtime's code for a raised error


class Lines:
    """A log sink that records ``(stream, line)`` and lets a test wait for a line."""

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

    def text(self) -> list[str]:
        with self._cond:
            return [line for _, line in self.lines]

    def wait_for(self, line: str, timeout: float = 60.0) -> None:
        with self._cond:
            seen = self._cond.wait_for(lambda: any(x == line for _, x in self.lines), timeout)
            assert seen, f"{line!r} never arrived; got {self.lines}"


@dataclass
class Gate:
    """A file a step waits for: the test releases the step by creating it."""

    path: Path

    def open(self) -> None:
        self.path.touch()


@dataclass
class Backend:
    """One infrastructure under contract and what it needs to run steps here."""

    name: str
    #: A new instance: each one stands for a worker process.
    factory: Callable[[], Infrastructure]
    #: Where step files, gates and markers live (the step can see it).
    workdir: Path
    #: ``StepLaunch.overrides`` of a python step (the image and mounts of a container).
    python_overrides: dict[str, Any] = field(default_factory=dict)
    #: Image of container steps.
    image: str = "busybox:1"
    #: For backends with ``kill_signals``: the exit code ``watch`` reports for a
    #: python step stopped by SIGTERM (``polite``) and by SIGKILL after the grace
    #: (``forced``); without ``kill_signals``, ``polite`` is the one code of a kill.
    killed_codes: dict[str, int] = field(default_factory=dict)
    run_id: str = field(default_factory=lambda: "contract" + uuid.uuid4().hex[:8])
    instances: list[Infrastructure] = field(default_factory=list)
    _files: int = 0

    @property
    def infra(self) -> Infrastructure:
        """The instance under test (made on first use)."""
        if not self.instances:
            self.new_instance()
        return self.instances[0]

    def new_instance(self) -> Infrastructure:
        """Another instance, as in another worker process."""
        inst = self.factory()
        self.instances.append(inst)
        return inst

    def close(self) -> None:
        for inst in self.instances:
            inst.close()

    def gate(self, name: str = "gate") -> Gate:
        self._files += 1
        return Gate(self.workdir / f"{name}-{self._files}")

    def launch(
        self, step: StepSpec, *, inputs: dict[str, Any] | None = None, **kw: Any
    ) -> StepLaunch:
        overrides = self.python_overrides if isinstance(step, PythonStep) else {}
        return StepLaunch(
            run_id=self.run_id,
            node=step.name,
            attempt=1,
            pipeline="contract",
            namespace="default",
            step=step,
            inputs=inputs or {},
            params={},
            nonce=uuid.uuid4().hex,
            overrides=dict(overrides),
            **kw,
        )

    def python(
        self,
        source: str,
        *,
        qualname: str = "step",
        name: str = "s",
        inputs: dict[str, Any] | None = None,
        **kw: Any,
    ) -> StepLaunch:
        """A python step running ``qualname`` of ``source`` (dedented)."""
        self._files += 1
        path = self.workdir / f"contract_steps_{self._files}.py"
        path.write_text(textwrap.dedent(source))
        step = PythonStep(name=name, function=FunctionRef(file=str(path), qualname=qualname))
        return self.launch(step, inputs=inputs, **kw)

    def container(self, name: str, script: str) -> StepLaunch:
        """A container step running ``sh -c script``."""
        step = ContainerStep(name=name, image=self.image, command=["sh", "-c"], args=[script])
        return self.launch(step)

    def step_of_kind(self, kind: str) -> StepLaunch:
        """A step of ``kind`` that prints ``KIND_LINE`` and succeeds."""
        line = KIND_LINE.format(kind=kind)
        if kind == "python":
            return self.python(f"def step():\n    print({line!r})\n    return {kind!r}\n")
        if kind == "container":
            return self.container("box-ok", f"echo '{line}'")
        if kind == "task":
            # Only infrastructures that declare "task" run it (the task
            # infrastructure has its own suite: tests/contract/test_plugins.py
            # and tests/integration/test_plugin_tasks.py); the others refuse it.
            step = TaskStep(name="call", type="http_call", config={"url": "http://127.0.0.1:9/"})
            return self.launch(step)
        raise AssertionError(
            f"the contract harness cannot build a {kind!r} step: add it to "
            "Backend.step_of_kind and Backend.failing_step in tests/contract/conftest.py"
        )

    def failing_step(self, kind: str) -> StepLaunch:
        """A step of ``kind`` that fails with ``FAILING_CODES[kind]``."""
        if kind == "python":
            return self.python("def step():\n    raise ValueError('bad input')\n")
        if kind == "container":
            return self.container("box-bad", f"echo failing; exit {FAILING_CODES[kind]}")
        if kind == "task":  # as above: refused by every backend of this suite
            step = TaskStep(name="call", type="http_call", config={"url": "http://127.0.0.1:9/"})
            return self.launch(step)
        raise AssertionError(f"the contract harness cannot build a failing {kind!r} step")


# -- the backends ------------------------------------------------------------------------


def _process(workdir: Path) -> Backend:
    from ferryman.infra.process import ProcessConfig, ProcessInfrastructure

    root = workdir / "process-work"
    root.mkdir()
    return Backend(
        "process",
        lambda: ProcessInfrastructure(ProcessConfig(workdir_root=str(root))),
        workdir,
        killed_codes={"polite": -15, "forced": -9},
    )


def _inline(workdir: Path) -> Backend:
    from ferryman.infra.inline import InlineInfrastructure

    return Backend("inline", InlineInfrastructure, workdir, killed_codes={"polite": EXIT_KILLED})


def _fake(workdir: Path) -> Backend:
    # Container steps cannot run here: their outcome is scripted (the lines
    # and exit codes of the steps ``step_of_kind`` and ``failing_step`` build).
    outcomes = {
        "box-ok": FakeOutcome(stdout=[KIND_LINE.format(kind="container")]),
        "box-bad": FakeOutcome(stdout=["failing"], exit_code=FAILING_CODES["container"]),
    }
    return Backend(
        "fake",
        lambda: FakeInfrastructure(outcomes=outcomes),
        workdir,
        killed_codes={"polite": EXIT_KILLED},
    )


def _docker(request: pytest.FixtureRequest, workdir: Path) -> Iterator[Backend]:
    from tests.docker_support import python_volumes, remove_labelled

    from ferryman.infra.docker import DockerConfig, DockerInfrastructure

    client = request.getfixturevalue("docker_client")
    image = request.getfixturevalue("busybox_image")
    python = ROOT / ".venv" / "bin" / "python"
    if not python.exists():
        pytest.skip("needs the worktree's .venv (scripts/setup.sh): python steps mount it")
    backend = Backend(
        "docker",
        lambda: DockerInfrastructure(DockerConfig(network_mode="none")),
        workdir,
        # this machine's Python and this worktree at the same paths, and the
        # step files and gates (written by the steps too: read-write)
        python_overrides={
            "image": image,
            "python": str(python),
            "volumes": [*python_volumes(), f"{workdir}:{workdir}:rw"],
        },
        image=image,
        # as pid 1, the runtime turns SIGTERM into exit code 143 (128 + 15)
        killed_codes={"polite": 143, "forced": 137},
    )
    try:
        yield backend
    finally:
        backend.close()
        remove_labelled(client, RUN_LABEL, backend.run_id)


def _kubernetes(workdir: Path) -> Iterator[Backend]:
    from tests.k8s_fake import FakeCluster

    from ferryman.infra.kubernetes import KubernetesConfig, KubernetesInfrastructure

    with FakeCluster() as cluster:
        config = KubernetesConfig(
            api_server=cluster.url,
            token="contract-token",  # type: ignore[arg-type]
            namespace="ferry",
            image="ferryman-runtime:1",  # the emulator runs python as this interpreter
            watch_seconds=2,  # the emulator ends watches after this, as servers do
        )
        backend = Backend(
            "kubernetes",
            lambda: KubernetesInfrastructure(config),
            workdir,
            # a killed Job's attempt is reported as killed, whatever its container said
            killed_codes={"polite": EXIT_KILLED, "forced": EXIT_KILLED},
        )
        try:
            yield backend
        finally:
            backend.close()
        assert cluster.errors == []


BACKENDS = ["process", "inline", "docker", "kubernetes", "fake"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Each infrastructure in turn (see the module's docs)."""
    if sys.platform == "win32":
        pytest.skip("POSIX process groups and signals")
    workdir = tmp_path / "contract"
    workdir.mkdir()
    name = request.param
    if name == "docker":
        yield from _docker(request, workdir)
    elif name == "kubernetes":
        yield from _kubernetes(workdir)
    else:
        made = {"process": _process, "inline": _inline, "fake": _fake}[name](workdir)
        try:
            yield made
        finally:
            made.close()


def wait_until(predicate: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
    """Poll ``predicate`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.02)

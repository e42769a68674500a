"""Entry point of a python step: ``python -m ferryman.runtime``.

Reads the JSON payload from ``FERRYMAN_STEP_PAYLOAD`` (``{"function":
{module|file, qualname}, "inputs", "nonce", "sys_path", "run_id", "node",
"attempt"}``; a value ``@/path/payload.json`` names a file holding it, used
for payloads too large for the environment), calls the function with
``**inputs`` and prints ``RESULT_MARKER + nonce + " " + outcome`` as the last
line of stdout. Exit codes: 0 success, 1 the function raised or returned a
value that is not JSON-serialisable, 2 bad payload or import failure.

Only the standard library is imported here so that a step starts fast.
"""

from __future__ import annotations

import json
import os
import sys

from ferryman.runtime.loader import EXIT_IMPORT, PAYLOAD_ENV, result_line, run_step

TYPE_CHECKING = False  # typing is not imported at run time: start-up cost
if TYPE_CHECKING:
    from typing import Any

PARENT_PID_ENV = "FERRYMAN_PARENT_PID"
_PR_SET_PDEATHSIG = 1
_SIGKILL = 9


def die_with_parent() -> None:
    """Linux: ask the kernel to SIGKILL this process when its parent dies.

    So a step does not outlive a worker that was ``kill -9``-ed. If the parent
    already died before the request was made, exit now. ``FERRYMAN_PARENT_PID``
    (set by the process infrastructure) names the worker, which closes the
    race during interpreter start-up.
    """
    expected_env = os.environ.pop(PARENT_PID_ENV, None)
    if not sys.platform.startswith("linux"):
        return
    ppid_before = os.getppid()
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, _SIGKILL, 0, 0, 0) != 0:
            return
    except (OSError, AttributeError):
        return
    ppid_now = os.getppid()
    if ppid_now != ppid_before:
        _parent_gone()
    if expected_env and expected_env.isdigit():
        expected = int(expected_env)
        if expected != ppid_now:
            # started through a wrapper, or reparented because the worker died
            try:
                os.kill(expected, 0)
            except ProcessLookupError:
                _parent_gone()
            except OSError:
                pass


def _parent_gone() -> None:
    sys.stderr.write("ferryman.runtime: the worker that started this step is gone; exiting\n")
    sys.stderr.flush()
    os._exit(EXIT_IMPORT)


def read_payload() -> dict[str, Any] | str:
    """The payload, or an error message."""
    raw = os.environ.get(PAYLOAD_ENV)
    if not raw:
        return f"environment variable {PAYLOAD_ENV} is not set"
    if raw.startswith("@"):
        try:
            with open(raw[1:], encoding="utf-8") as f:
                raw = f.read()
        except OSError as exc:
            return f"cannot read the payload file {raw[1:]}: {exc}"
    try:
        payload = json.loads(raw)
    except ValueError as exc:
        return f"{PAYLOAD_ENV} is not valid JSON: {exc}"
    if not isinstance(payload, dict):
        return f"{PAYLOAD_ENV} must be a JSON object"
    function = payload.get("function")
    if (
        not isinstance(function, dict)
        or not isinstance(function.get("qualname"), str)
        or not (function.get("module") or function.get("file"))
    ):
        return "the payload needs function: {module or file, qualname}"
    if not isinstance(payload.get("inputs", {}), dict):
        return "the payload's inputs must be a JSON object"
    if not isinstance(payload.get("nonce"), str) or not payload["nonce"]:
        return "the payload needs a nonce"
    sys_path = payload.get("sys_path") or []
    if not isinstance(sys_path, list):
        return "the payload's sys_path must be a list"
    return payload


def main() -> int:
    die_with_parent()
    stdout = sys.stdout
    reconfigure = getattr(stdout, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(line_buffering=True)
    payload = read_payload()
    if isinstance(payload, str):
        sys.stderr.write(f"ferryman.runtime: {payload}\n")
        return EXIT_IMPORT

    def write_stderr(text: str) -> None:
        sys.stdout.flush()
        sys.stderr.write(text)
        sys.stderr.flush()

    outcome, code = run_step(
        payload["function"],
        payload.get("inputs") or {},
        [str(p) for p in payload.get("sys_path") or []],
        write_stderr,
    )
    # the user's code may have replaced sys.stdout: flush it, then write the
    # result line to the real stdout as its very last line
    for stream in {id(s): s for s in (sys.stdout, sys.stderr, stdout, sys.__stderr__)}.values():
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
    stdout.write(result_line(payload["nonce"], outcome) + "\n")
    stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())

"""Entry point of a python step: ``python -m ferryman.runtime``.

Reads the JSON payload from ``FERRYMAN_STEP_PAYLOAD`` (``{"function":
{module|file, qualname}, "inputs", "nonce", "sys_path", "run_id", "node",
"attempt", "max_output_bytes"}``; a value ``@/path/payload.json`` names a file holding it, used
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

LIFELINE_ENV = "FERRYMAN_LIFELINE_FD"
_SIGKILL = 9


def die_with_parent() -> None:
    """Never outlive the worker that started this step.

    The *lifeline* is the read end of a pipe whose write end only the worker
    holds (``FERRYMAN_LIFELINE_FD``); the kernel closes it when the worker
    dies, however it dies. EOF is checked before any user code runs (so a
    worker that died during our start-up is noticed: no race), then watched
    by a daemon thread that SIGKILLs this step's whole process group, the
    step's own children included. (PR_SET_PDEATHSIG is deliberately not used:
    it would kill this process first and orphan its children.)
    """
    fd_text = os.environ.pop(LIFELINE_ENV, None)
    if not fd_text or not fd_text.isdigit():
        return
    fd = int(fd_text)
    import select

    try:
        readable, _, _ = select.select([fd], [], [], 0)
    except (OSError, ValueError):
        return  # not a valid descriptor: run without a lifeline
    if readable and os.read(fd, 1) == b"":
        _parent_gone()

    def watch() -> None:
        try:
            os.read(fd, 1)  # blocks until the worker's end closes
        except OSError:
            return
        try:
            # Only a group we lead is ours to kill (the process infrastructure
            # starts each step in its own session); otherwise just ourselves.
            if os.getpgrp() == os.getpid():
                os.killpg(os.getpgrp(), _SIGKILL)
        finally:
            os._exit(EXIT_IMPORT)

    import threading

    threading.Thread(target=watch, name="ferryman-lifeline", daemon=True).start()


def exit_on_sigterm() -> None:
    """Give SIGTERM its usual effect when the step runs as process 1.

    In a container the runtime is its PID namespace's process 1, for which
    the kernel drops every signal left at its default action: ``docker stop``
    and a pod's deletion would wait out the whole grace period and then
    SIGKILL the step. Here SIGTERM ends it at once, with exit code 143
    (128 + 15, as a shell reports a process SIGTERM ended). A step that sets
    its own SIGTERM handler replaces this one.
    """
    if os.getpid() != 1:
        return
    import signal

    def on_sigterm(signum: int, frame: object) -> None:
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, on_sigterm)


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


def _limit(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def main() -> int:
    die_with_parent()
    exit_on_sigterm()
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
        max_output_bytes=_limit(payload.get("max_output_bytes")),
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

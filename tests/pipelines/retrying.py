"""Steps that fail in chosen ways, for ``retry_on`` / ``no_retry_on``
(issue 12, item 11): tests/integration/test_retry_on.py."""

from __future__ import annotations

import time

from ferryman import container, pipeline, step


class Transient(Exception):
    """A failure of our own that is worth retrying."""


class Permanent(Transient):
    """A kind of it that is not."""


ERRORS: dict[str, type[Exception]] = {
    "value": ValueError,
    "timeout": TimeoutError,
    "refused": ConnectionRefusedError,  # an OSError
    "missing": FileNotFoundError,  # an OSError too, but listed in no_retry_on
    "key": KeyError,  # a LookupError
    "transient": Transient,
    "permanent": Permanent,
}


@step(
    retries=2,
    retry_delay=0.01,
    retry_on=[TimeoutError, OSError, Transient],
    # a class of this file by its name, as YAML would give it: <file stem>.<class>
    no_retry_on=[FileNotFoundError, LookupError, "retrying.Permanent"],
)
def fail(how: str) -> None:
    print(f"failing with {how}")
    raise ERRORS[how](f"failed: {how}")


@step(retries=2, retry_delay=0.01, retry_on=[ValueError], timeout=1)
def slow(seconds: float) -> None:
    print("sleeping")
    time.sleep(seconds)


@pipeline
def picky() -> None:
    for how in ERRORS:
        fail.with_options(name=f"fail-{how}")(how)


@pipeline
def sleepy(seconds: float = 30) -> None:
    slow(seconds)


@pipeline
def exits() -> None:
    container("only-75", "busybox", retries=3, retry_delay=0.01, retry_on_exit_codes=[75])
    container("not-2", "busybox", retries=3, retry_delay=0.01, no_retry_on_exit_codes=[2])


@step(retries=1, retry_delay=0.01, retry_on=[Transient])
def wobbly() -> None:
    print("trying")
    raise Transient("still down")


@pipeline
def flaky() -> None:
    wobbly()

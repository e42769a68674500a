"""Retry policy: exponential backoff with jitter, and which failures are retried (pure)."""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RetryPolicy:
    """How many times a step is retried, and how long to wait between attempts.

    ``retries`` counts *extra* attempts: ``retries=2`` means at most 3 attempts.
    The wait before attempt ``n+1`` is ``delay * backoff**(n-1)``, capped at
    ``max_delay``, then multiplied by a random factor in
    ``[1 - jitter, 1 + jitter]`` so that many failing steps do not retry in
    lock-step.
    """

    retries: int = 0
    delay: float = 1.0
    backoff: float = 2.0
    jitter: float = 0.1
    max_delay: float = 300.0

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError("retries must be >= 0")
        if not all(math.isfinite(x) for x in (self.delay, self.backoff, self.max_delay)):
            raise ValueError("retry delays and backoff must be finite numbers")
        if self.delay < 0 or self.max_delay < 0:
            raise ValueError("retry delays must be >= 0")
        if self.backoff < 1:
            raise ValueError("retry backoff must be >= 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("retry jitter must be between 0 and 1")

    @property
    def max_attempts(self) -> int:
        return self.retries + 1

    def should_retry(self, attempt: int) -> bool:
        """Whether a failed ``attempt`` (1-based) gets another try."""
        return attempt < self.max_attempts

    def delay_after(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed ``attempt`` (1-based) before the next one."""
        try:
            base = min(self.delay * self.backoff ** max(attempt - 1, 0), self.max_delay)
        except OverflowError:
            base = self.max_delay
        if self.jitter == 0 or base == 0:
            return base
        r = (rng or random).uniform(1 - self.jitter, 1 + self.jitter)
        return base * r


# -- which failures are retried ------------------------------------------------------------
#
# A step's retries can be limited to the failures worth retrying: by the type
# of the exception a python step raised (``retry_on`` / ``no_retry_on``), or
# by the exit code of a container step (``retry_on_exit_codes`` /
# ``no_retry_on_exit_codes``). Each function says why a failure is *not*
# retried, or None; failures that are neither (a timeout, a lost worker, a
# step that could not start) are retried as ``retries`` says. Why names, and
# how they match: docs/decisions/0015-retry-on-by-name.md.

#: A dotted Python name: ``TimeoutError``, ``requests.exceptions.ConnectionError``.
_DOTTED = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")


def check_exception_names(names: Sequence[Any]) -> list[str]:
    """``names`` validated as dotted names (``builtins.X`` becomes ``X``), in
    order, without repeats; ``ValueError`` names a bad one."""
    out: list[str] = []
    for name in names:
        if not isinstance(name, str) or not _DOTTED.fullmatch(name):
            raise ValueError(
                f"{name!r} is not an exception type's name (use a class, a built-in name such "
                "as 'TimeoutError', or 'package.module.ClassName')"
            )
        name = name.removeprefix("builtins.")
        if name not in out:
            out.append(name)
    return out


def names_match(listed: str, raised: str) -> bool:
    """Whether the listed name ``listed`` names the class ``raised``: the
    same name, or, both with a module part, one is the other's trailing
    module path (``retrying.Permanent`` and ``tests.pipelines.retrying.Permanent``:
    one file imported by path in one process and as a package module in
    another). A bare name is a built-in's and matches only itself."""
    if listed == raised:
        return True
    if "." not in listed or "." not in raised:
        return False
    return raised.endswith("." + listed) or listed.endswith("." + raised)


def exception_refusal(
    raised: str, mro: Sequence[str], retry_on: Sequence[str], no_retry_on: Sequence[str]
) -> str | None:
    """Why an exception of type ``raised`` (whose classes, from itself up, are
    ``mro``) is not retried, or None.

    ``no_retry_on`` wins over ``retry_on`` (``retry_on=[OSError]`` with
    ``no_retry_on=[FileNotFoundError]`` retries every OSError but that one).
    A listed class matches its subclasses too (``names_match`` on each class
    of ``mro``).
    """
    types = list(mro) or [raised]

    def first_listed(listed: Sequence[str]) -> str | None:
        return next((t for t in types if any(names_match(n, t) for n in listed)), None)

    hit = first_listed(no_retry_on)
    if hit is not None:
        which = raised if hit == raised else f"{raised} (a {hit})"
        return f"{which} is in no_retry_on; not retried"
    if retry_on and first_listed(retry_on) is None:
        return f"{raised} is not in retry_on; not retried"
    return None


def exit_code_refusal(code: int, retry_on: list[int], no_retry_on: list[int]) -> str | None:
    """Why a container that exited with ``code`` is not retried, or None
    (``no_retry_on_exit_codes`` wins over ``retry_on_exit_codes``)."""
    if code in no_retry_on:
        return f"exit code {code} is in no_retry_on_exit_codes; not retried"
    if retry_on and code not in retry_on:
        return f"exit code {code} is not in retry_on_exit_codes; not retried"
    return None


#: The default waits between attempts of an event delivery or a run-completion
#: callback, after failed attempt 1, 2, …; the last one repeats until the
#: maximum age (24 h by default): like the well-known webhook services, a
#: receiver that is down for a night still gets everything.
WEBHOOK_SCHEDULE = "5s,5m,30m,2h,5h,10h"

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_intervals(text: str) -> tuple[float, ...]:
    """``"5s,5m,30m,2h"`` → seconds; a bare number is seconds. ``ValueError``
    saying which item is wrong."""
    out: list[float] = []
    for raw in text.split(","):
        item = raw.strip().lower()
        if not item:
            raise ValueError(f"empty interval in {text!r} (expected e.g. '5s,5m,30m,2h')")
        unit = _UNITS.get(item[-1])
        number = item[:-1] if unit else item
        try:
            value = float(number) * (unit or 1.0)
        except ValueError:
            raise ValueError(
                f"{raw.strip()!r} is not an interval (a number with s, m, h or d, e.g. '30m')"
            ) from None
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{raw.strip()!r}: an interval must be a finite number >= 0")
        out.append(value)
    return tuple(out)


@dataclass(frozen=True)
class RetrySchedule:
    """The waits between attempts: ``intervals[n-1]`` after failed attempt
    ``n``, the last interval repeating; each multiplied by a random factor in
    ``[1 - jitter, 1 + jitter]``."""

    intervals: tuple[float, ...]
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if not self.intervals:
            raise ValueError("a retry schedule needs at least one interval")
        if not 0 <= self.jitter <= 1:
            raise ValueError("retry jitter must be between 0 and 1")

    @classmethod
    def parse(cls, text: str, jitter: float = 0.2) -> RetrySchedule:
        """The schedule of ``"5s,5m,30m,2h"``."""
        return cls(parse_intervals(text), jitter)

    @classmethod
    def exponential(cls, first: float, cap: float, factor: float = 2.0) -> RetrySchedule:
        """``first``, doubling (``factor``) up to ``cap``, then ``cap`` on."""
        out = [min(first, cap)]
        while out[-1] < cap and factor > 1 and first > 0:
            out.append(min(out[-1] * factor, cap))
        return cls(tuple(out))

    @property
    def longest(self) -> float:
        """The longest interval."""
        return max(self.intervals)

    def base_after(self, attempt: int) -> float:
        """The wait after failed ``attempt`` (1-based), without jitter."""
        return self.intervals[min(max(attempt, 1), len(self.intervals)) - 1]

    def delay_after(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed ``attempt`` (1-based), with jitter."""
        base = self.base_after(attempt)
        if self.jitter == 0 or base == 0:
            return base
        return base * (rng or random).uniform(1 - self.jitter, 1 + self.jitter)

    def elapsed_before(self, attempt: int) -> float:
        """Seconds from the first attempt to attempt ``attempt``, without jitter."""
        return sum(self.base_after(n) for n in range(1, attempt))

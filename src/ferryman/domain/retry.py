"""Retry policy: exponential backoff with jitter (pure)."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


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

"""RetryPolicy: attempts, exponential backoff, cap and jitter (SPEC §2)."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ferryman.domain.retry import RetryPolicy
from ferryman.domain.spec import ContainerStep

# --------------------------------------------------------------------------- attempts


def test_defaults() -> None:
    p = RetryPolicy()
    assert (p.retries, p.delay, p.backoff, p.jitter, p.max_delay) == (0, 1.0, 2.0, 0.1, 300.0)
    assert p.max_attempts == 1
    assert not p.should_retry(1)


@pytest.mark.parametrize("retries", [0, 1, 2, 5, 100])
def test_max_attempts_counts_the_first_try(retries: int) -> None:
    assert RetryPolicy(retries=retries).max_attempts == retries + 1


def test_should_retry_until_the_last_attempt() -> None:
    p = RetryPolicy(retries=2)
    assert [p.should_retry(a) for a in (1, 2, 3, 4)] == [True, True, False, False]


def test_zero_retries_never_retries() -> None:
    p = RetryPolicy(retries=0)
    assert not p.should_retry(1)
    assert p.max_attempts == 1


def test_policy_is_immutable() -> None:
    p = RetryPolicy(retries=1)
    with pytest.raises(AttributeError):
        p.retries = 3  # type: ignore[misc]


# --------------------------------------------------------------------------- delays


def test_exponential_growth_without_jitter() -> None:
    p = RetryPolicy(retries=10, delay=0.5, backoff=3.0, jitter=0.0, max_delay=1e9)
    assert [p.delay_after(a) for a in range(1, 6)] == [0.5, 1.5, 4.5, 13.5, 40.5]


def test_backoff_one_is_constant() -> None:
    p = RetryPolicy(retries=5, delay=2.0, backoff=1.0, jitter=0.0)
    assert {p.delay_after(a) for a in range(1, 6)} == {2.0}


def test_attempt_zero_or_negative_uses_the_base_delay() -> None:
    p = RetryPolicy(delay=1.5, jitter=0.0)
    assert p.delay_after(0) == 1.5
    assert p.delay_after(-3) == 1.5


def test_max_delay_caps_the_growth() -> None:
    p = RetryPolicy(retries=20, delay=1.0, backoff=2.0, jitter=0.0, max_delay=10.0)
    delays = [p.delay_after(a) for a in range(1, 11)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0, 10.0, 10.0, 10.0]


def test_delay_above_max_delay_is_capped_at_once() -> None:
    p = RetryPolicy(delay=50.0, jitter=0.0, max_delay=5.0)
    assert p.delay_after(1) == 5.0


def test_zero_delay_stays_zero_even_with_jitter() -> None:
    p = RetryPolicy(retries=3, delay=0.0, jitter=1.0)
    assert [p.delay_after(a, random.Random(1)) for a in (1, 2, 3)] == [0.0, 0.0, 0.0]


def test_zero_max_delay_means_no_wait() -> None:
    p = RetryPolicy(retries=3, delay=5.0, jitter=0.5, max_delay=0.0)
    assert p.delay_after(2, random.Random(1)) == 0.0


def test_jitter_is_deterministic_with_a_seeded_rng() -> None:
    p = RetryPolicy(retries=5, delay=1.0, jitter=0.5)
    a = [p.delay_after(n, random.Random(42)) for n in range(1, 5)]
    b = [p.delay_after(n, random.Random(42)) for n in range(1, 5)]
    assert a == b


def test_jitter_matches_the_documented_formula() -> None:
    p = RetryPolicy(retries=5, delay=2.0, backoff=2.0, jitter=0.25)
    expected_factor = random.Random(7).uniform(0.75, 1.25)
    assert p.delay_after(3, random.Random(7)) == pytest.approx(8.0 * expected_factor)


def test_jitter_actually_varies_the_delay() -> None:
    p = RetryPolicy(retries=5, delay=1.0, jitter=0.5)
    rng = random.Random(3)
    values = {p.delay_after(2, rng) for _ in range(50)}
    assert len(values) > 40
    assert all(1.0 <= v <= 3.0 for v in values)
    # spread over the whole range, not stuck on one side
    assert min(values) < 1.5
    assert max(values) > 2.5


def test_jitter_is_applied_after_the_cap() -> None:
    """Documented: the capped delay is then multiplied by the jitter factor."""
    p = RetryPolicy(retries=50, delay=1.0, jitter=0.2, max_delay=10.0)
    rng = random.Random(0)
    values = [p.delay_after(40, rng) for _ in range(200)]
    assert all(8.0 <= v <= 12.0 for v in values)


def test_delay_after_without_rng_uses_the_module_random() -> None:
    p = RetryPolicy(retries=2, delay=1.0, jitter=0.1)
    assert 0.9 <= p.delay_after(1) <= 1.1


def test_step_spec_builds_the_policy() -> None:
    s = ContainerStep(
        name="s",
        image="alpine",
        retries=3,
        retry_delay=0.5,
        retry_backoff=3.0,
        retry_jitter=0.0,
        retry_max_delay=4.0,
    )
    p = s.retry_policy
    assert p == RetryPolicy(retries=3, delay=0.5, backoff=3.0, jitter=0.0, max_delay=4.0)
    assert [p.delay_after(a) for a in (1, 2, 3)] == [0.5, 1.5, 4.0]


# --------------------------------------------------------------------------- properties


@settings(database=None)
@given(
    delay=st.floats(min_value=0.0, max_value=1000.0),
    backoff=st.floats(min_value=1.0, max_value=10.0),
    jitter=st.floats(min_value=0.0, max_value=1.0),
    max_delay=st.floats(min_value=0.0, max_value=3600.0),
    attempt=st.integers(min_value=1, max_value=60),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_delay_is_within_the_jitter_band(
    delay: float, backoff: float, jitter: float, max_delay: float, attempt: int, seed: int
) -> None:
    p = RetryPolicy(retries=100, delay=delay, backoff=backoff, jitter=jitter, max_delay=max_delay)
    base = min(delay * backoff ** (attempt - 1), max_delay)
    d = p.delay_after(attempt, random.Random(seed))
    assert math.isfinite(d)
    assert d >= 0
    eps = 1e-9 * max(1.0, base)
    assert base * (1 - jitter) - eps <= d <= base * (1 + jitter) + eps
    assert d <= max_delay * (1 + jitter) + eps


@settings(database=None)
@given(
    delay=st.floats(min_value=0.001, max_value=100.0),
    backoff=st.floats(min_value=1.0, max_value=5.0),
    max_delay=st.floats(min_value=0.0, max_value=1000.0),
    attempt=st.integers(min_value=1, max_value=40),
)
def test_without_jitter_delays_never_decrease(
    delay: float, backoff: float, max_delay: float, attempt: int
) -> None:
    p = RetryPolicy(retries=100, delay=delay, backoff=backoff, jitter=0.0, max_delay=max_delay)
    assert p.delay_after(attempt) <= p.delay_after(attempt + 1)
    assert p.delay_after(attempt) <= max_delay


@settings(database=None)
@given(retries=st.integers(min_value=0, max_value=1000), attempt=st.integers(1, 2000))
def test_should_retry_matches_max_attempts(retries: int, attempt: int) -> None:
    p = RetryPolicy(retries=retries)
    assert p.should_retry(attempt) == (attempt < retries + 1)
    # the number of attempts that get a retry is exactly `retries`
    if attempt == 1:
        assert sum(p.should_retry(a) for a in range(1, retries + 3)) == retries


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"retries": -1}, "retries must be >= 0"),
        ({"delay": -0.1}, "retry delays must be >= 0"),
        ({"max_delay": -1.0}, "retry delays must be >= 0"),
        ({"backoff": 0.5}, "retry backoff must be >= 1"),
        ({"backoff": 0.0}, "retry backoff must be >= 1"),
        ({"jitter": -0.01}, "retry jitter must be between 0 and 1"),
        ({"jitter": 1.01}, "retry jitter must be between 0 and 1"),
        ({"jitter": float("nan")}, "retry jitter must be between 0 and 1"),
    ],
)
def test_bad_values_are_rejected(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [{"jitter": 0.0}, {"jitter": 1.0}, {"backoff": 1.0}, {"delay": 0.0, "max_delay": 0.0}],
)
def test_boundary_values_are_accepted(kwargs: dict[str, float]) -> None:
    RetryPolicy(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "field", ["retries", "retry_delay", "retry_backoff", "retry_jitter", "retry_max_delay"]
)
def test_step_spec_rejects_what_the_policy_rejects(field: str) -> None:
    bad = {"retries": -1, "retry_delay": -1.0, "retry_backoff": 0.5, "retry_jitter": 2.0}
    bad["retry_max_delay"] = -1.0
    with pytest.raises(ValueError):
        ContainerStep(name="s", image="alpine", **{field: bad[field]})


# --------------------------------------------------------------------------- known bugs


def test_huge_backoff_is_capped_not_overflowing() -> None:
    s = ContainerStep(name="s", image="alpine", retries=100, retry_backoff=10000.0)
    p = s.retry_policy
    assert p.delay_after(100, random.Random(0)) == pytest.approx(300.0, rel=0.1)


def test_nan_delay_is_rejected() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(delay=float("nan"))

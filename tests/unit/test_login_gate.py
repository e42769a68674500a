"""The pieces of the login gate and the lockout policy, without a server."""

from __future__ import annotations

import pytest

from ferryman.api.login_gate import RateLimiter, client_address
from ferryman.services.logins import LockoutPolicy


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_rate_limiter_allows_bursts_then_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(30, clock=clock)  # 30 a minute: one every 2 s
    for _ in range(30):
        assert limiter.wait("a") == 0
        limiter.take("a")
    assert limiter.wait("a") == pytest.approx(2.0)
    assert limiter.wait("b") == 0  # keys are independent
    clock.now += 1.0
    assert limiter.wait("a") == pytest.approx(1.0)
    clock.now += 1.0
    assert limiter.wait("a") == 0
    limiter.take("a")
    assert limiter.wait("a") == pytest.approx(2.0)
    clock.now += 3600
    for _ in range(30):  # refilled, never beyond the burst
        limiter.take("a")
    assert limiter.wait("a") > 0


def test_a_rate_limiter_forgets_idle_keys_first() -> None:
    clock = Clock()
    limiter = RateLimiter(60, max_keys=100, clock=clock)
    limiter.take("busy")
    limiter.take("busy")
    clock.now += 0.5
    for i in range(150):
        limiter.take(f"k{i}")
        clock.now += 10  # each key is full again (idle) long before the next
    assert len(limiter) <= 100
    assert limiter.wait("busy") == 0


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
        (None, "unknown"),
        ("testclient", "testclient"),
    ],
)
def test_client_addresses(host: str | None, key: str) -> None:
    assert client_address(host) == key


def test_lockout_delays_double_up_to_the_cap() -> None:
    policy = LockoutPolicy(max_failures=5, lock_seconds=60, max_lock_seconds=600)
    assert [policy.lock_for(n) for n in range(1, 10)] == [
        None, None, None, None, 60, 120, 240, 480, 600
    ]  # fmt: skip
    assert policy.lock_for(10**6) == 600

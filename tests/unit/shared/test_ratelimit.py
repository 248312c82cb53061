"""Token buckets stay bounded; the failed-attempt throttle counts failures only."""

from __future__ import annotations

from shared.ratelimit import FailureThrottle, TokenBuckets


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_buckets_keep_at_most_max_keys_dropping_the_least_recently_used() -> None:
    buckets = TokenBuckets(Clock(), max_keys=100)
    for i in range(1000):
        buckets.acquire(f"k{i}", rate=1, burst=1)
        buckets.acquire("busy", rate=1, burst=100)  # used all along: never the oldest
    assert len(buckets) == 100
    # "busy" kept its state (999 taken of a burst of 100 → empty); k0 was forgotten, so
    # it starts full again (forgetting only ever forgives).
    assert buckets.wait("busy", rate=1, burst=100) > 0
    assert buckets.wait("k0", rate=1, burst=1) == 0
    assert buckets.wait("k999", rate=1, burst=1) > 0


def test_wait_takes_nothing() -> None:
    buckets = TokenBuckets(Clock())
    assert buckets.acquire("a", rate=1, burst=2) == 0
    for _ in range(10):
        assert buckets.wait("a", rate=1, burst=2) == 0
    assert buckets.acquire("a", rate=1, burst=2) == 0
    assert buckets.wait("a", rate=1, burst=2) == 1.0
    assert len(buckets) == 1
    assert buckets.wait("never-seen", rate=1, burst=2) == 0
    assert len(buckets) == 1  # asking does not add a key


def test_throttle_allows_the_failures_then_waits_for_one_to_refill() -> None:
    clock = Clock()
    throttle = FailureThrottle(10, 60.0, clock=clock)
    for _ in range(10):
        assert throttle.retry_after("10.0.0.1") == 0
        throttle.failed("10.0.0.1")
    assert throttle.retry_after("10.0.0.1") == 6.0  # one failure's worth: 60 s / 10
    assert throttle.retry_after("10.0.0.2") == 0  # another address is unaffected
    clock.now += 5.9
    assert throttle.retry_after("10.0.0.1") > 0
    clock.now += 0.1
    assert throttle.retry_after("10.0.0.1") == 0
    throttle.failed("10.0.0.1")
    assert throttle.retry_after("10.0.0.1") > 0  # only that one had come back


def test_throttle_off_and_bounded() -> None:
    off = FailureThrottle(0, 60.0, clock=Clock())
    for _ in range(100):
        off.failed("a")
    assert off.retry_after("a") == 0
    bounded = FailureThrottle(10, 60.0, max_keys=50, clock=Clock())
    for i in range(10_000):
        bounded.failed(f"10.{i // 256}.{i % 256}.1")
    assert len(bounded.buckets) == 50

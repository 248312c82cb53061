from __future__ import annotations

from shared.ratelimit import TokenBuckets, retry_after_header


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_refill_at_the_rate_per_key() -> None:
    clock = Clock()
    buckets = TokenBuckets(clock)
    assert [buckets.acquire("a", rate=2, burst=3) for _ in range(3)] == [0, 0, 0]
    wait = buckets.acquire("a", rate=2, burst=3)
    assert wait == 0.5
    assert buckets.acquire("b", rate=2, burst=3) == 0  # other keys unaffected
    clock.now += 0.5
    assert buckets.acquire("a", rate=2, burst=3) == 0
    clock.now += 100
    assert [buckets.acquire("a", rate=2, burst=3) for _ in range(4)][-1] > 0  # capped at burst


def test_zero_rate_means_unlimited_and_retry_after_is_whole_seconds() -> None:
    buckets = TokenBuckets(Clock())
    assert all(buckets.acquire("a", rate=0, burst=0) == 0 for _ in range(1000))
    assert retry_after_header(0.01) == "1"
    assert retry_after_header(2.2) == "3"

"""Rate limits and backoff, with a clock the test moves."""

from __future__ import annotations

from services.member_retargeting.delivery.pacing import Breaker, Bucket, retry_delay


def test_the_bucket_allows_the_burst_then_the_rate() -> None:
    bucket = Bucket(rate=10, burst=5)
    assert [bucket.take(0.0) for _ in range(6)] == [True] * 5 + [False]
    assert bucket.available(0.0) == 0
    assert bucket.available(0.35) == 3  # 10 a second
    assert sum(bucket.take(1.0) for _ in range(20)) == 5  # never more than the burst


def test_retry_delays_grow_to_the_ceiling_with_jitter_inside_the_bounds() -> None:
    lows = [retry_delay(n, base=1.0, ceiling=60.0, rand=lambda: 0.0) for n in range(1, 10)]
    highs = [retry_delay(n, base=1.0, ceiling=60.0, rand=lambda: 1.0) for n in range(1, 10)]
    assert set(lows) == {1.0}
    assert highs == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0, 60.0]
    assert retry_delay(10_000, base=1.0, ceiling=60.0, rand=lambda: 0.5) == 30.5


def test_the_breaker_pauses_longer_with_each_failure_and_a_success_closes_it() -> None:
    breaker = Breaker(base=1.0, ceiling=30.0, rand=lambda: 1.0)
    assert breaker.allows(0.0)
    assert breaker.failed(0.0) == 2.0
    assert not breaker.allows(1.9) and breaker.allows(2.0)
    assert breaker.failed(2.0) == 4.0
    breaker.succeeded()
    assert breaker.allows(2.1) and breaker.failures == 0

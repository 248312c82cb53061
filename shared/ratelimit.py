"""Token buckets in each worker process: intake's per-write-key rate limit and the
per-address throttle on failed sign-ins and bearer attempts.

Pure and thread-safe, and bounded: at most ``max_keys`` buckets are kept (least recently
used first out), so a flood of distinct keys (addresses, made-up write keys) never grows
memory without end. Forgetting a bucket only forgives it: it starts full again. With N
gunicorn workers a key can reach N x the rate at most (each worker has its own buckets).

:meth:`TokenBuckets.acquire` returns 0 when allowed, otherwise the seconds to wait (for
``Retry-After``).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

MAX_KEYS = 10_000
"""Buckets kept per :class:`TokenBuckets` unless told otherwise."""


class TokenBuckets:
    def __init__(
        self, clock: Callable[[], float] = time.monotonic, *, max_keys: int = MAX_KEYS
    ) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.clock = clock
        self.max_keys = max_keys
        self._lock = threading.Lock()
        self._state: OrderedDict[str, tuple[float, float]] = OrderedDict()  # (tokens, at)

    def __len__(self) -> int:
        return len(self._state)

    def _tokens(self, key: str, now: float, rate: float, burst: float) -> float:
        tokens, updated = self._state.get(key, (burst, now))
        return min(burst, tokens + max(0.0, now - updated) * rate)

    def _store(self, key: str, tokens: float, now: float) -> None:
        self._state[key] = (tokens, now)
        self._state.move_to_end(key)
        while len(self._state) > self.max_keys:
            self._state.popitem(last=False)

    def acquire(self, key: str, *, rate: float, burst: float, cost: float = 1.0) -> float:
        """Take ``cost`` tokens; returns 0.0 if allowed, else seconds until it would be."""
        if rate <= 0:
            return 0.0  # unlimited
        now = self.clock()
        with self._lock:
            tokens = self._tokens(key, now, rate, burst)
            if tokens >= cost:
                self._store(key, tokens - cost, now)
                return 0.0
            self._store(key, tokens, now)
            return (cost - tokens) / rate

    def wait(self, key: str, *, rate: float, burst: float, cost: float = 1.0) -> float:
        """Like :meth:`acquire` but takes nothing: 0.0 when ``cost`` tokens are there, else
        the seconds until they will be."""
        if rate <= 0:
            return 0.0
        now = self.clock()
        with self._lock:
            if key not in self._state:
                return 0.0
            tokens = self._tokens(key, now, rate, burst)
            return 0.0 if tokens >= cost else (cost - tokens) / rate


class FailureThrottle:
    """At most ``failures`` failed attempts per ``window_seconds`` from one key (a client
    address), as a token bucket: each failure takes a token, tokens come back at
    ``failures / window_seconds`` per second. Successes take nothing, so they are never
    slowed; but while a key has no token left :meth:`retry_after` is positive and the
    caller refuses every attempt from it, a valid credential included: answering a right
    guess differently from a wrong one would keep the guessing going. ``failures`` 0
    turns the throttle off."""

    def __init__(
        self,
        failures: int,
        window_seconds: float,
        *,
        max_keys: int = MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures = failures
        self.window_seconds = window_seconds
        self.buckets = TokenBuckets(clock, max_keys=max_keys)

    @property
    def _rate(self) -> float:
        if self.failures <= 0 or self.window_seconds <= 0:
            return 0.0
        return self.failures / self.window_seconds

    def retry_after(self, key: str) -> float:
        """0.0 when ``key`` may try now, else the seconds until it may."""
        return self.buckets.wait(key, rate=self._rate, burst=self.failures)

    def failed(self, key: str) -> None:
        """Count one failed attempt from ``key``."""
        self.buckets.acquire(key, rate=self._rate, burst=self.failures)


def retry_after_header(wait_seconds: float) -> str:
    return str(max(1, math.ceil(wait_seconds)))

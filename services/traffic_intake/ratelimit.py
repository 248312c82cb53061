"""Per-write-key rate limiting: a token bucket per source, in each worker process.

Pure and thread-safe. With N gunicorn workers a source can reach N x rate at most (each
worker has its own buckets); the limit exists to keep one noisy source from starving the
others, for which per-worker is enough. ``acquire`` returns 0 when allowed, otherwise the
seconds to wait (for ``Retry-After``).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable


class TokenBuckets:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._state: dict[str, tuple[float, float]] = {}  # key -> (tokens, updated_at)

    def acquire(self, key: str, *, rate: float, burst: float, cost: float = 1.0) -> float:
        """Take ``cost`` tokens; returns 0.0 if allowed, else seconds until it would be."""
        if rate <= 0:
            return 0.0  # unlimited
        now = self._clock()
        with self._lock:
            tokens, updated = self._state.get(key, (burst, now))
            tokens = min(burst, tokens + (now - updated) * rate)
            if tokens >= cost:
                self._state[key] = (tokens - cost, now)
                return 0.0
            self._state[key] = (tokens, now)
            return (cost - tokens) / rate


def retry_after_header(wait_seconds: float) -> str:
    return str(max(1, math.ceil(wait_seconds)))

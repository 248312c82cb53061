"""How fast each channel sends, and how it slows down when its provider fails. Pure.

* :class:`Bucket` — a token bucket per channel: ``rate`` messages a second on average,
  bursts of up to ``burst``. Per dispatcher process (run one per deployment, or divide
  the provider's limit among them).
* :class:`Breaker` — a provider failing (a refused connection, a 4xx/5xx SMTP reply that
  is not about one recipient, a webhook receiver answering 5xx) pauses its whole channel
  for a while that doubles with each failure in a row, up to a ceiling, with jitter; the
  first success closes it. Nothing is lost meanwhile: dispatches wait in the store.
* :func:`retry_delay` — when one dispatch is tried again: exponential backoff with "full
  jitter" (a random pause up to the doubled ceiling), so a receiver coming back is not
  hit by every retry at the same instant.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field


def retry_delay(
    attempt: int,
    *,
    base: float,
    ceiling: float,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds before attempt ``attempt + 1`` (``attempt`` ≥ 1 failed so far): uniform in
    ``[base, min(ceiling, base * 2 ** attempt)]``."""
    top = min(ceiling, base * 2 ** min(attempt, 30))
    return base + (max(top, base) - base) * rand()


@dataclass
class Bucket:
    rate: float  # tokens a second
    burst: float
    tokens: float = -1.0
    at: float = 0.0

    def take(self, now: float) -> bool:
        """One token if there is one now."""
        if self.tokens < 0:
            self.tokens, self.at = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def available(self, now: float) -> int:
        """Whole tokens available now (without taking them)."""
        if self.tokens < 0:
            return int(self.burst)
        return int(min(self.burst, self.tokens + (now - self.at) * self.rate))


@dataclass
class Breaker:
    base: float
    ceiling: float
    failures: int = 0
    open_until: float = 0.0
    rand: Callable[[], float] = field(default=random.random, repr=False)

    def allows(self, now: float) -> bool:
        return now >= self.open_until

    def failed(self, now: float) -> float:
        """Record a provider failure; returns how long the channel pauses."""
        self.failures += 1
        pause = retry_delay(self.failures, base=self.base, ceiling=self.ceiling, rand=self.rand)
        self.open_until = now + pause
        return pause

    def succeeded(self) -> None:
        self.failures, self.open_until = 0, 0.0

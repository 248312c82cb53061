"""Write keys and the sources they belong to.

Keys from ``FUNNEL_WRITE_KEY`` (configuration) always work as the configured source name;
keys created through the admin API live hashed in ``sources``. Lookups are cached per
process for ``ttl`` seconds, so a disabled or rotated key stops working everywhere within
that time (at once in the process that changed it).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, select

from services.traffic_intake.models import sources


@dataclass(frozen=True)
class Source:
    name: str
    enabled: bool
    rate_limit_per_second: float | None = None


def new_write_key() -> str:
    return "wk_" + secrets.token_urlsafe(24)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class SourceDirectory:
    def __init__(
        self,
        engine: Engine,
        configured_keys: Sequence[str],
        configured_name: str,
        *,
        ttl: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.configured_keys = tuple(configured_keys)
        self.configured = Source(configured_name, True)
        self.ttl = ttl
        self.clock = clock
        self._cache: dict[str, tuple[Source | None, float]] = {}
        self._lock = threading.Lock()

    def lookup(self, key: str) -> Source | None:
        """The source of ``key``, or None for an unknown key. Raises SQLAlchemy errors
        when the store is unreachable (the caller answers 503)."""
        if any(hmac.compare_digest(key.encode(), k.encode()) for k in self.configured_keys):
            return self.configured
        digest = hash_key(key)
        now = self.clock()
        with self._lock:
            hit = self._cache.get(digest)
        if hit is not None and now - hit[1] < self.ttl:
            return hit[0]
        with self.engine.connect() as conn:
            row = conn.execute(
                select(sources.c.name, sources.c.enabled, sources.c.rate_limit_per_second).where(
                    sources.c.write_key_hash == digest
                )
            ).first()
        found = Source(row.name, row.enabled, row.rate_limit_per_second) if row else None
        with self._lock:
            if len(self._cache) > 10_000:  # unknown keys must not grow memory without bound
                self._cache.clear()
            self._cache[digest] = (found, now)
        return found

    def invalidate(self) -> None:
        with self._lock:
            self._cache.clear()

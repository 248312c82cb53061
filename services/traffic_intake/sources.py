"""Write keys and the sources they belong to.

Keys from ``FUNNEL_WRITE_KEY`` (configuration) always work as the configured (server)
source, ``FUNNEL_BROWSER_WRITE_KEY`` as the configured browser source; keys created
through the admin API live hashed in ``sources``. A source is a ``server`` source (secret
key: refused when a browser sends it) or a ``browser`` source (public key: accepted only
from its allowed origins; what its events may do downstream: :mod:`shared.provenance`).
Lookups are cached per process for ``ttl`` seconds, so a disabled or rotated key stops
working everywhere within that time (at once in the process that changed it).
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
from shared.provenance import BROWSER, SERVER


@dataclass(frozen=True)
class Source:
    name: str
    enabled: bool
    rate_limit_per_second: float | None = None
    kind: str = SERVER
    origins: frozenset[str] = frozenset()


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
        browser_keys: Sequence[str] = (),
        browser_origins: Sequence[str] = (),
        browser_name: str = "browser",
        ttl: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.configured_keys = tuple(configured_keys)
        self.configured = Source(configured_name, True)
        self.browser_keys = tuple(browser_keys)
        self.browser = Source(browser_name, True, kind=BROWSER, origins=frozenset(browser_origins))
        self._origins: tuple[frozenset[str], float] | None = None
        self.ttl = ttl
        self.clock = clock
        self._cache: dict[str, tuple[Source | None, float]] = {}
        self._lock = threading.Lock()

    def lookup(self, key: str) -> Source | None:
        """The source of ``key``, or None for an unknown key. Raises SQLAlchemy errors
        when the store is unreachable (the caller answers 503)."""
        if any(hmac.compare_digest(key.encode(), k.encode()) for k in self.configured_keys):
            return self.configured
        if any(hmac.compare_digest(key.encode(), k.encode()) for k in self.browser_keys):
            return self.browser
        digest = hash_key(key)
        now = self.clock()
        with self._lock:
            hit = self._cache.get(digest)
        if hit is not None and now - hit[1] < self.ttl:
            return hit[0]
        with self.engine.connect() as conn:
            row = conn.execute(
                select(
                    sources.c.name,
                    sources.c.enabled,
                    sources.c.rate_limit_per_second,
                    sources.c.kind,
                    sources.c.allowed_origins,
                ).where(sources.c.write_key_hash == digest)
            ).first()
        found = (
            Source(
                row.name,
                row.enabled,
                row.rate_limit_per_second,
                kind=row.kind or SERVER,
                origins=frozenset(row.allowed_origins or ()),
            )
            if row
            else None
        )
        with self._lock:
            if len(self._cache) > 10_000:  # unknown keys must not grow memory without bound
                self._cache.clear()
            self._cache[digest] = (found, now)
        return found

    def invalidate(self) -> None:
        with self._lock:
            self._cache.clear()
            self._origins = None

    def browser_origins(self) -> frozenset[str]:
        """Every origin some enabled browser source allows: what a CORS preflight (which
        carries no write key) is answered for. The request itself is then held to its
        own source's origins. Cached like keys."""
        now = self.clock()
        with self._lock:
            cached = self._origins
        if cached is not None and now - cached[1] < self.ttl:
            return cached[0]
        found = set(self.browser.origins if self.browser_keys else ())
        with self.engine.connect() as conn:
            for (allowed,) in conn.execute(
                select(sources.c.allowed_origins).where(
                    sources.c.kind == BROWSER, sources.c.enabled.is_(True)
                )
            ):
                found.update(allowed or ())
        origins = frozenset(found)
        with self._lock:
            self._origins = (origins, now)
        return origins

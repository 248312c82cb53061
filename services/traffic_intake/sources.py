"""Write keys and the sources they belong to.

Keys from ``FUNNEL_WRITE_KEY`` (configuration) always work as the configured (server)
source, ``FUNNEL_BROWSER_WRITE_KEY`` as the configured browser source; keys created
through the admin API or ``funnel keys`` (:func:`create_source`, :func:`rotate_key`) live
hashed in ``sources``. A source is a ``server`` source (secret key: refused when a browser
sends it) or a ``browser`` source (public key: accepted only from its allowed origins;
what its events may do downstream: :mod:`shared.provenance`).
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
from typing import Any

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from services.traffic_intake.models import sources
from shared.db import utcnow
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


# ------------------------------------------------------- creating sources, rotating keys
# The one place both the admin API (services.traffic_intake.admin_api) and the operator
# tool (deploy/cli.py) create sources and rotate their keys; each maps the errors below
# to its own (409/404, a one-line message) and writes its own audit entry.


class SourceError(Exception):
    """A source cannot be created or changed as asked."""


class DuplicateSource(SourceError):
    def __init__(self, name: str) -> None:
        super().__init__(f"a source named {name!r} exists")
        self.name = name


class UnknownSource(SourceError):
    def __init__(self, source_id: int) -> None:
        super().__init__(f"no source {source_id}")
        self.source_id = source_id


@dataclass(frozen=True)
class IssuedKey:
    """A new write key in plain text (shown once: only its hash is stored) and its
    source's row as it now is."""

    key: str
    row: Any  # sqlalchemy Row of ``sources``


def _row(conn: Connection, source_id: int) -> Any:
    row = conn.execute(select(sources).where(sources.c.id == source_id)).first()
    if row is None:
        raise UnknownSource(source_id)
    return row


def create_source(
    conn: Connection,
    *,
    name: str,
    kind: str = SERVER,
    allowed_origins: Sequence[str] = (),
    rate_limit_per_second: float | None = None,
) -> IssuedKey:
    """Create source ``name`` (fields as validated by ``schemas.SourceIn``) with a new
    write key, in the caller's transaction. :class:`DuplicateSource` when the name is
    taken (the transaction is then unusable: the caller's ``begin()`` rolls it back).
    Running :class:`SourceDirectory` caches are the caller's to invalidate."""
    key = new_write_key()
    try:
        source_id = conn.execute(
            insert(sources)
            .values(
                name=name,
                write_key_hash=hash_key(key),
                key_hint=key[-4:],
                enabled=True,
                rate_limit_per_second=rate_limit_per_second,
                kind=kind,
                allowed_origins=list(allowed_origins) or None,
            )
            .returning(sources.c.id)
        ).scalar_one()
    except IntegrityError as exc:
        raise DuplicateSource(name) from exc
    return IssuedKey(key, _row(conn, source_id))


def rotate_key(conn: Connection, source_id: int) -> IssuedKey:
    """Replace source ``source_id``'s write key by a new one, in the caller's
    transaction: the old key stops working once it commits (and caches expire).
    :class:`UnknownSource` when there is no such source."""
    _row(conn, source_id)
    key = new_write_key()
    conn.execute(
        update(sources)
        .where(sources.c.id == source_id)
        .values(write_key_hash=hash_key(key), key_hint=key[-4:], key_rotated_at=utcnow())
    )
    return IssuedKey(key, _row(conn, source_id))


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

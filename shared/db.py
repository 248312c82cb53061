"""Database helpers shared by every service: engines, sessions, and the two tables each
service's consumer needs (processed events for idempotency, the transactional outbox).

SQLite runs in WAL mode with a busy timeout so that API workers and the consumer process
can write the same file. A transaction takes SQLite's write lock when it begins (``BEGIN
IMMEDIATE``), except inside :func:`reading` — what GET and HEAD requests run in — where it
begins deferred and read-only: WAL readers then neither wait for writers nor hold them up.
PostgreSQL needs nothing special.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Engine,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    TypeDecorator,
    create_engine,
    event,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

# One naming convention so constraint names are stable across SQLite and PostgreSQL
# (and so future Alembic migrations can refer to them).
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Portable auto-increment primary key: BIGINT on PostgreSQL, INTEGER (rowid) on SQLite.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python, on SQLite too (which
    stores no offset) and on PostgreSQL (``timestamptz``). Naive input is refused."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: Funnel stores only timezone-aware times")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# PostgreSQL limits, unless the URL sets its own (``?connect_timeout=…`` and
# ``?options=-c statement_timeout=…``): a hung server or a runaway statement ends in an
# error the runner can judge, never a process waiting forever.
PG_CONNECT_TIMEOUT_S = 10
PG_STATEMENT_TIMEOUT_MS = 30_000


_READING: ContextVar[bool] = ContextVar("funnel_db_reading", default=False)


@contextmanager
def reading(only: bool = True) -> Iterator[None]:
    """Transactions begun inside only read. On SQLite they begin deferred with
    ``query_only`` on, so they see the last commit without taking the write lock: a sales
    page read no longer queues behind a consumer's batch (with ``BEGIN IMMEDIATE`` it
    waited in SQLite's busy back-off, up to 0.7 s under load), nor a long report behind
    it. A write attempted inside fails at once (``OperationalError``: "attempt to write a
    readonly database") instead of risking the lock upgrade that IMMEDIATE exists to
    avoid. No effect on PostgreSQL. ``only=False`` is the usual read-write mode, said
    explicitly (a request handler sets one or the other)."""
    token = _READING.set(only)
    try:
        yield
    finally:
        _READING.reset(token)


def make_engine(url: str, *, busy_timeout_ms: int = 10_000, **kwargs: Any) -> Engine:
    """Create an engine; SQLite gets WAL, a busy timeout and foreign keys; PostgreSQL gets
    connect and statement timeouts. SQL parameters (person data) never reach logs or
    error messages.

    ``busy_timeout_ms`` bounds how long a SQLite writer waits for the lock before the
    statement fails with ``OperationalError`` (intake keeps it short to answer 503 fast).
    """
    kwargs.setdefault("hide_parameters", True)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": busy_timeout_ms / 1000}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # Take transaction control away from pysqlite so SAVEPOINT works and we can
            # BEGIN IMMEDIATE (below).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(connection: Any) -> None:
            # IMMEDIATE takes the write lock up front: a deferred transaction that reads and
            # then writes fails with "database is locked" when another process wrote in
            # between, and busy_timeout cannot help it. Reads (see reading()) cannot write.
            read_only = _READING.get()
            info = connection.connection.info
            if info.get("query_only") is not read_only:
                connection.exec_driver_sql(f"PRAGMA query_only={int(read_only)}")
                info["query_only"] = read_only
            connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine
    if url.startswith("postgresql"):
        query = make_url(url).query
        connect_args = dict(kwargs.pop("connect_args", {}))
        if "connect_timeout" not in query:
            connect_args.setdefault("connect_timeout", PG_CONNECT_TIMEOUT_S)
        if "options" not in query:
            connect_args.setdefault("options", f"-c statement_timeout={PG_STATEMENT_TIMEOUT_MS}")
        kwargs["connect_args"] = connect_args
    if url.startswith("postgresql+psycopg2") or url.startswith("postgresql:"):
        # Batched UPDATEs (consumers update a batch's leads in one executemany): psycopg2
        # otherwise sends one round trip per row.
        kwargs.setdefault("executemany_mode", "values_plus_batch")
    return create_engine(url, pool_pre_ping=True, **kwargs)


def ensure_sqlite_directory(url: str) -> None:
    """Create the folder of a SQLite file URL (for ``init-db``; engines never create it,
    so a missing volume is an error, not a new empty database)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)


def ping(bind: Session | Any) -> None:
    """A trivial query: raises the driver's error when the database does not answer."""
    bind.execute(text("SELECT 1"))


def make_sessionmaker(engine: Engine) -> sessionmaker:
    return sessionmaker(bind=engine, expire_on_commit=False)


def processed_events_table(metadata: MetaData) -> Table:
    """Ids of events a consumer has applied, written in the same transaction as the
    effects, so a redelivered event is recognised and skipped (exactly-once effects)."""
    return Table(
        "processed_events",
        metadata,
        Column("event_id", String(128), primary_key=True),
        Column("topic", String(200), nullable=False),
        Column("processed_at", UTCDateTime(), nullable=False, default=utcnow),
    )


def outbox_table(metadata: MetaData, name: str = "outbox") -> Table:
    """Events a service has decided to publish, committed with the state that caused them.

    The relay publishes unsent rows in id order and stamps ``sent_at``; a crash between
    publish and stamp re-publishes the same ``event_id``, which consumers skip. One relay
    per table: a service with two publishing processes gives each its own ``name``.
    """
    table = Table(
        name,
        metadata,
        Column("id", BigIntPK, primary_key=True, autoincrement=True),
        Column("event_id", String(128), nullable=False, unique=True),
        Column("topic", String(200), nullable=False),
        Column("key", String(200), nullable=True),
        Column("value", LargeBinary, nullable=False),
        # Most rows have none: stored as SQL NULL, not encoded as JSON ``null`` row by row.
        Column("headers", JSON(none_as_null=True), nullable=True),
        Column("created_at", UTCDateTime(), nullable=False, default=utcnow),
        Column("sent_at", UTCDateTime(), nullable=True),
    )
    Index(f"ix_{name}_unsent", table.c.sent_at, table.c.id)
    return table

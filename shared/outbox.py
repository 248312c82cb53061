"""The transactional outbox: write events with the state that caused them, publish later.

``enqueue`` runs inside the caller's transaction. ``OutboxRelay.publish_pending`` sends
unsent rows in id order through an idempotent acks=all producer, waits for every future,
and only then stamps ``sent_at``. Failure modes: a Kafka error raises
``kafka.errors.KafkaError`` and leaves the rows unsent (they go out on the next call); a
database error raises SQLAlchemy's error. A crash between send and stamp re-sends rows
with the same ``event_id``, which every consumer skips.
"""

from __future__ import annotations

import json
import logging
import signal
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import FrameType
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError
from kafka.structs import TopicPartition
from sqlalchemy import Connection, Engine, Table, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from shared.config import KafkaConfig
from shared.db import reading, utcnow
from shared.deadletter import DeadLetter
from shared.events import Envelope, encode
from shared.kafka import make_producer, make_tail_reader
from shared.topics import DEADLETTER

log = logging.getLogger(__name__)

# The largest record the relay sends: under the producer's max_request_size (1 MiB) and
# Apache Kafka's default message.max.bytes (1 MiB + 12) with room for the batch framing.
# A bigger one would be refused every time and hold up every row behind it; it becomes a
# dead letter instead. The broker's refusal itself is not relied on: it leaves an
# idempotent producer failing everything it holds.
MAX_RECORD_BYTES = 1_000_000


@dataclass(frozen=True)
class Outgoing:
    """An event a handler or endpoint wants published."""

    topic: str
    key: str
    envelope: Envelope


def insert_ignoring_duplicates(table: Table, dialect_name: str) -> Any:
    """``INSERT … ON CONFLICT DO NOTHING`` for SQLite and PostgreSQL."""
    if dialect_name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if dialect_name == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    raise NotImplementedError(f"no upsert for dialect {dialect_name}")


def outbox_rows(
    outgoing: Iterable[Outgoing], *, validate_payload: bool = True
) -> list[dict[str, Any]]:
    now = utcnow()
    return [
        {
            "event_id": o.envelope.event_id,
            "topic": o.topic,
            "key": o.key,
            "value": encode(o.envelope, validate_payload=validate_payload),
            "headers": None,
            "created_at": now,
        }
        for o in outgoing
    ]


def dead_letter_row(letter: DeadLetter, event_id: str) -> dict[str, Any]:
    """An outbox row that publishes ``letter`` to the dead-letter topic, with its
    ``dlq.*`` headers; written in the same transaction as whatever rejected it."""
    return {
        "event_id": event_id,
        "topic": DEADLETTER,
        "key": letter.key.decode(errors="replace") if letter.key else None,
        "value": letter.value or b"",
        "headers": {name: value.decode(errors="replace") for name, value in letter.headers()},
        "created_at": utcnow(),
    }


def enqueue(
    bind: Session | Connection,
    table: Table,
    outgoing: Sequence[Outgoing],
    *,
    validate_payload: bool = True,
) -> int:
    """Insert the events into the outbox in the caller's transaction.

    An ``event_id`` already in the outbox is ignored (that is intake's deduplication).
    Returns how many rows were new. ``validate_payload=False`` only for payloads the
    caller has validated itself.
    """
    if not outgoing:
        return 0
    rows = outbox_rows(outgoing, validate_payload=validate_payload)
    dialect = bind.get_bind().dialect.name if isinstance(bind, Session) else bind.dialect.name
    # Counted by RETURNING: a many-row INSERT's rowcount is not reliable on PostgreSQL
    # (psycopg2 reports the last statement's), so a batch's "accepted" would be wrong.
    statement = insert_ignoring_duplicates(table, dialect).returning(table.c.event_id)
    return len(bind.execute(statement, rows).all())


def unsent(conn: Connection, table: Table) -> int:
    """How many rows of the outbox ``table`` wait to be published."""
    waiting = select(func.count()).select_from(table).where(table.c.sent_at.is_(None))
    return int(conn.scalar(waiting) or 0)


def _event_id_of(value: bytes | None) -> str | None:
    try:
        data = json.loads(value or b"")
    except ValueError:
        return None
    return data.get("event_id") if isinstance(data, dict) else None


class OutboxRelay:
    """Publishes a service's outbox. On PostgreSQL several relays may share one outbox
    (they take turns, :meth:`_publish_claimed`); on SQLite, one relay per outbox table.

    The producer comes from ``producer_factory`` and is thrown away after any Kafka error:
    kafka-python's idempotent producer can enter a fatal state (e.g. after the broker
    restarts, InitProducerId fails) from which it never recovers, so the next call starts
    a fresh one.

    Exactly once on the topic: rows are stamped only after Kafka acked them, so after a
    crash or a failed send some unstamped rows may already be on Kafka. While that is
    possible (at start-up, after any Kafka error) the relay first *reconciles*: it reads
    back the tail of the topics the oldest unsent rows go to (``reader_factory``) and
    stamps the rows it finds there, then sends the rest. Without a ``reader_factory`` a
    crash can re-send one batch (consumers skip it by ``event_id``). Dead letters are not
    reconciled (their values carry no event id). With several relays, one that fails
    mid-send can leave rows on Kafka that the next one sends again (consumers skip the
    copy by ``event_id``).
    """

    def __init__(
        self,
        engine: Engine,
        table: Table,
        producer_factory: Callable[[], KafkaProducer],
        *,
        batch_size: int = 1000,
        flush_timeout_s: float = 30.0,
        reader_factory: Callable[[], KafkaConsumer] | None = None,
    ) -> None:
        self.engine = engine
        self.table = table
        self.producer_factory = producer_factory
        self.batch_size = batch_size
        self.flush_timeout_s = flush_timeout_s
        self.reader_factory = reader_factory
        self._producer: KafkaProducer | None = None
        self._uncertain = True  # a previous process may have died mid-send

    @property
    def producer(self) -> KafkaProducer:
        if self._producer is None:
            self._producer = self.producer_factory()
        return self._producer

    def close(self, timeout_s: float = 10.0) -> None:
        if self._producer is not None:
            self._producer.close(timeout=timeout_s)
            self._producer = None

    def _discard_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=0)
            except KafkaError:  # pragma: no cover - closing a broken client
                log.debug("closing a failed producer raised", exc_info=True)

    def publish_pending(self, max_batches: int | None = None) -> int:
        """Send unsent rows until none are left (or ``max_batches``); returns rows sent."""
        if self._uncertain:
            self.reconcile()
        sent = 0
        batches = 0
        while max_batches is None or batches < max_batches:
            sent_now = (
                self._publish_claimed()
                if self.engine.dialect.name == "postgresql"
                else self._publish_next()
            )
            if not sent_now:
                break
            sent += sent_now
            batches += 1
        if sent:
            log.debug("relayed %d events", sent)
        return sent

    def _pending(self) -> Any:
        t = self.table
        return (
            select(t.c.id, t.c.event_id, t.c.topic, t.c.key, t.c.value, t.c.headers)
            .where(t.c.sent_at.is_(None))
            .order_by(t.c.id)
            .limit(self.batch_size)
        )

    def _publish_claimed(self) -> int:
        """PostgreSQL: send and stamp a batch while holding the outbox's advisory lock
        (transaction-scoped, taken without waiting), so relays running side by side (one
        per consumer process of a scaled-out group) take turns: a row is sent by one of
        them, in id order (a lead's events keep their order), and no row is locked, so
        erasures and inserts never wait on Kafka. A relay that finds the lock taken sends
        nothing this round."""
        with self.engine.begin() as conn:
            if not conn.scalar(select(func.pg_try_advisory_xact_lock(self._lock_key))):
                return 0
            rows = conn.execute(self._pending()).all()
            if rows:
                self._send_or_doubt(rows)
                self._doubt_on_failure(lambda: self._stamp(conn, rows))
        return len(rows)

    def _publish_next(self) -> int:
        """SQLite (one writer): read, send, stamp; the write lock is never held while
        Kafka is waited for, so intake keeps accepting while Kafka is slow or down (nor
        for the read: it takes no write lock, see :func:`shared.db.reading`)."""
        with reading(), self.engine.connect() as conn:
            rows = conn.execute(self._pending()).all()
        if rows:
            self._send_or_doubt(rows)

            def stamp() -> None:
                with self.engine.begin() as conn:
                    self._stamp(conn, rows)

            self._doubt_on_failure(stamp)
        return len(rows)

    @property
    def _lock_key(self) -> int:
        """The outbox table's advisory-lock key (per database, stable across processes)."""
        return zlib.crc32(f"funnel.outbox.{self.table.name}".encode())

    def _send_or_doubt(self, rows: Sequence[Any]) -> None:
        try:
            self._send_all(rows)
        except KafkaError:
            self._discard_producer()
            self._uncertain = True  # some of these may have been written
            raise

    def _doubt_on_failure(self, stamp: Callable[[], None]) -> None:
        """Stamp what was sent; if the stamp (or its commit) fails, the rows are on Kafka
        but not marked: read them back before sending anything again."""
        try:
            stamp()
        except BaseException:
            self._uncertain = True
            raise

    def _stamp(self, conn: Connection, rows: Sequence[Any]) -> None:
        t = self.table
        conn.execute(update(t).where(t.c.id.in_([r.id for r in rows])).values(sent_at=utcnow()))

    def reconcile(self, *, window: int | None = None, max_seconds: float = 30.0) -> int:
        """Stamp unsent rows that are already on Kafka; returns how many. Raises
        ``KafkaError`` if the topics cannot be read (the relay retries later)."""
        if self.reader_factory is None:
            self._uncertain = False
            return 0
        t = self.table
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.c.id, t.c.event_id, t.c.topic)
                .where(t.c.sent_at.is_(None), t.c.topic != DEADLETTER)
                .order_by(t.c.id)
                .limit(self.batch_size)
            ).all()
        if not rows:
            self._uncertain = False
            return 0
        wanted = {r.event_id: r.id for r in rows}
        found = self._read_back(
            {r.topic for r in rows}, wanted, window or 2 * self.batch_size, max_seconds
        )
        if found:
            with self.engine.begin() as conn:
                conn.execute(update(t).where(t.c.id.in_(found)).values(sent_at=utcnow()))
            log.warning("reconciled %d events already on Kafka (not re-sent)", len(found))
        self._uncertain = False
        return len(found)

    def _read_back(
        self, topics: set[str], wanted: dict[str, int], window: int, max_seconds: float
    ) -> list[int]:
        assert self.reader_factory is not None
        reader = self.reader_factory()
        try:
            partitions = [
                TopicPartition(topic, p)
                for topic in topics
                for p in sorted(reader.partitions_for_topic(topic) or ())
            ]
            if not partitions:
                return []
            reader.assign(partitions)
            ends = reader.end_offsets(partitions)
            starts = reader.beginning_offsets(partitions)
            for tp in partitions:
                # Read past the reported end: some brokers under-report it by a batch.
                reader.seek(tp, max(starts[tp], ends[tp] - window))
            found: list[int] = []
            deadline = time.monotonic() + max_seconds
            empty_polls = 0
            while empty_polls < 2 and time.monotonic() < deadline:
                polled = reader.poll(timeout_ms=300)
                empty_polls = 0 if polled else empty_polls + 1
                for records in polled.values():
                    for record in records:
                        event_id = _event_id_of(record.value)
                        if event_id in wanted:
                            found.append(wanted[event_id])
            return found
        finally:
            reader.close()

    def _send_all(self, rows: Sequence[Any]) -> None:
        """Send the rows and wait for every ack. A row past :data:`MAX_RECORD_BYTES` would
        be refused every time and block every row behind it: it is not sent but replaced
        by a dead letter naming it (the row stays in the outbox until pruned) and counts
        as sent. Any delivery error raises: nothing is stamped."""
        producer = self.producer
        futures = []
        refused: list[tuple[Any, int]] = []
        for row in rows:
            key = row.key.encode() if row.key else None
            headers = [(k, v.encode()) for k, v in (row.headers or {}).items()] or None
            size = len(row.value) + len(key or b"") + sum(len(k) + len(v) for k, v in headers or [])
            if size > MAX_RECORD_BYTES:
                refused.append((row, size))
                continue
            futures.append(
                producer.send(row.topic, key=key, value=bytes(row.value), headers=headers)
            )
        producer.flush(timeout=self.flush_timeout_s)
        for future in futures:
            # Raises the delivery error, if any: nothing is stamped sent then.
            future.get(timeout=self.flush_timeout_s)
        if refused:
            self._dead_letter_refused(refused)

    def _dead_letter_refused(self, refused: Sequence[tuple[Any, int]]) -> None:
        producer = self.producer
        letters = []
        for row, size in refused:
            log.error(
                "outbox row %s (%s, %d bytes) is too large for Kafka: dead-lettered",
                row.event_id,
                row.topic,
                size,
            )
            letter = DeadLetter(
                source=f"outbox:{self.table.name}",
                partition=-1,
                offset=-1,
                key=row.key.encode() if row.key else None,
                value=None,  # it is what Kafka refused; the outbox keeps it until pruned
                consumer=self.table.name,
                kind="too_large",
                reason=(
                    f"event {row.event_id} for {row.topic}: {size} bytes, more than "
                    f"the {MAX_RECORD_BYTES} a Kafka record may hold here"
                ),
            )
            letters.append(producer.send(DEADLETTER, key=letter.key, headers=letter.headers()))
        producer.flush(timeout=self.flush_timeout_s)
        for future in letters:
            future.get(timeout=self.flush_timeout_s)

    def prune(self, older_than: datetime) -> int:
        """Delete sent rows created before ``older_than`` (ends their dedupe window)."""
        t = self.table
        with self.engine.begin() as conn:
            result = conn.execute(
                delete(t).where(t.c.sent_at.is_not(None), t.c.created_at < older_than)
            )
        return int(result.rowcount or 0)


class RelayLoop:
    """A relay process's loop: publish the outbox, a few batches at a time, until stopped.

    Kafka errors and passing database errors (a lock timeout, a restart:
    ``OperationalError``) are retried with capped backoff (the rows wait durably; rows
    sent but not stamped are read back first); other database errors propagate, for the
    supervisor to restart the process. :meth:`request_stop` (a signal handler) only sets a
    flag: the batch in hand is finished and flushed first. Every
    ``housekeeping_interval_s``: sent rows past ``dedupe_window`` are pruned, then the
    service's own ``housekeeping`` runs."""

    def __init__(
        self,
        relay: OutboxRelay,
        *,
        dedupe_window: timedelta,
        housekeeping: Callable[[], object] = lambda: None,
        housekeeping_interval_s: float = 600.0,
    ) -> None:
        self.relay = relay
        self.dedupe_window = dedupe_window
        self.housekeeping = housekeeping
        self.housekeeping_interval_s = housekeeping_interval_s
        self._stop = False

    def request_stop(self, signum: int = 0, _frame: FrameType | None = None) -> None:
        self._stop = True

    def housekeep(self) -> None:
        """Prune sent rows past the dedupe window, then the service's own housekeeping."""
        self.relay.prune(utcnow() - self.dedupe_window)
        self.housekeeping()

    def run(self, *, idle_sleep_s: float = 0.05, max_seconds: float | None = None) -> None:
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        backoff = 0.5
        next_prune = 0.0
        while not self._stop and (deadline is None or time.monotonic() < deadline):
            try:
                sent = self.relay.publish_pending(max_batches=10)
                backoff = 0.5
            except (KafkaError, OperationalError) as exc:
                # Kafka, or the database (a lock timeout, a restart): rows stay unsent.
                log.warning("publish failed (%s); retrying in %.1fs", exc, backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            if time.monotonic() > next_prune:
                self.housekeep()
                next_prune = time.monotonic() + self.housekeeping_interval_s
            if not sent:
                time.sleep(idle_sleep_s)
        try:
            self.relay.publish_pending(max_batches=10)
        except (KafkaError, OperationalError):
            log.warning("stopping with unsent events; they stay in the outbox")
        self.relay.close()


def service_relay(
    service: str, kafka: KafkaConfig, engine: Engine, table: Table, *, batch_size: int = 1000
) -> OutboxRelay:
    """The relay of ``service``'s outbox, with a producer of its own (replaced after a
    failure) and a tail reader to read back rows it is in doubt about."""
    return OutboxRelay(
        engine,
        table,
        lambda: make_producer(kafka, f"{service}-relay"),
        batch_size=batch_size,
        reader_factory=lambda: make_tail_reader(kafka),
    )


def relay_main(
    service: str,
    kafka: KafkaConfig,
    engine: Engine,
    table: Table,
    *,
    dedupe_window: timedelta | None = None,
    batch_size: int = 1000,
    housekeeping: Callable[[], object] = lambda: None,
) -> None:
    """A service's relay process: publishes its outbox until SIGTERM/SIGINT (the batch in
    hand is finished first); prunes sent rows past ``dedupe_window`` (default
    ``kafka.dedupe_horizon_days``), then runs ``housekeeping``. Run it instead of the
    consumer's own relay, never beside it on SQLite (on PostgreSQL relays take turns, see
    :class:`OutboxRelay`)."""
    loop = RelayLoop(
        service_relay(service, kafka, engine, table, batch_size=batch_size),
        dedupe_window=dedupe_window or timedelta(days=kafka.dedupe_horizon_days),
        housekeeping=housekeeping,
    )
    signal.signal(signal.SIGTERM, loop.request_stop)
    signal.signal(signal.SIGINT, loop.request_stop)
    log.info("relay publishing %s outbox to Kafka at %s", service, kafka.bootstrap_servers)
    loop.run()

"""The consumer runner shared by every service.

Loop: poll a batch → decode each message → hand the new ones to the service's pure
handler, a whole run of one topic at a time, inside one database transaction → record
processed event ids and the outgoing events in the outbox in that same transaction →
commit → publish dead letters → relay the outbox → commit offsets. Auto-commit is off; a
message's offset is committed only after its effects are durable, so a crash anywhere
redelivers, and the processed-id table makes redelivery harmless.

Batches first, one by one on failure (as arroyo's "retry the batch message by message"):
the batch is applied in one savepoint, which lets handlers read once and write with bulk
statements. Only if a handler raises a data error is that savepoint rolled back and the
batch applied again one message per savepoint, so the bad message is found, dead-lettered
and the rest still applied; the first attempt leaves nothing behind, so handlers need no
care of their own for this.

Error policy (the only place it is decided):
* ``InvalidEvent`` / ``marshmallow.ValidationError`` from decoding or from a handler are
  data errors: the message becomes a dead letter with its reason and the runner moves on.
* Anything else (database down, Kafka down, a bug) is not the message's fault: the batch
  rolls back, offsets stay, and the error propagates so the process exits non-zero and
  its supervisor restarts it. Outbox relay failures are retried on the next loop.
* ``DeadLetterLimit`` stops the runner when most recent messages are failing: that is a
  bad deploy, not bad data, and must not pour the topic into the dead-letter topic.

SIGTERM / SIGINT only set a flag; the loop finishes the batch in hand, commits and exits.
"""

from __future__ import annotations

import logging
import signal
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from types import FrameType
from typing import Any, Protocol

from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition
from marshmallow import ValidationError
from sqlalchemy import Engine, Table, insert, select
from sqlalchemy.orm import Session, sessionmaker

from shared.config import KafkaConfig
from shared.db import make_sessionmaker, utcnow
from shared.deadletter import DeadLetter
from shared.events import Envelope, InvalidEvent, decode
from shared.kafka import make_consumer, make_producer, make_tail_reader
from shared.outbox import OutboxRelay, Outgoing, outbox_rows
from shared.topics import DEADLETTER, REGISTRY

log = logging.getLogger(__name__)

Handler = Callable[[Envelope, Session], Sequence[Outgoing]]
"""A handler of one event: the event and an open session in, events to publish out. It
may read and write through the session; it never commits, and knows nothing of Kafka."""

BatchHandler = Callable[[Sequence[Envelope], Session], Sequence[Outgoing]]
"""What the runner calls: events of one topic, in topic order, and an open session in;
the events to publish for all of them out. It applies all of them or raises (a data error
for any one makes the runner retry them one per call, see the module docstring)."""


def each(handler: Handler) -> BatchHandler:
    """A batch handler that applies the events one at a time with ``handler``."""

    def apply(events: Sequence[Envelope], session: Session) -> list[Outgoing]:
        return [out for event in events for out in handler(event, session)]

    return apply


class Record(Protocol):
    """What the runner needs of a Kafka record (kafka-python's ConsumerRecord fits)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class DeadLetterLimitExceeded(RuntimeError):
    """Too many recent messages failed: stop instead of dead-lettering everything."""


@dataclass
class DeadLetterLimit:
    """Stops the runner when over ``max_ratio`` of the last ``window`` messages were dead
    letters and there are at least ``min_invalid`` of them."""

    max_ratio: float = 0.5
    window: int = 1000
    min_invalid: int = 100
    _recent: deque[bool] = field(default_factory=deque)

    def check(self, outcomes: Sequence[bool]) -> None:
        """``outcomes``: one bool per message, True when it was dead-lettered."""
        self._recent.extend(outcomes)
        while len(self._recent) > self.window:
            self._recent.popleft()
        invalid = sum(self._recent)
        if invalid >= self.min_invalid and invalid / len(self._recent) > self.max_ratio:
            raise DeadLetterLimitExceeded(
                f"{invalid} of the last {len(self._recent)} messages were invalid"
            )


@dataclass
class BatchResult:
    applied: int = 0
    duplicates: int = 0
    dead_letters: list[DeadLetter] = field(default_factory=list)
    outgoing: list[Outgoing] = field(default_factory=list)


class BatchProcessor:
    """Applies one batch of records in one transaction. No Kafka object inside, so it is
    tested with plain records against a real database."""

    def __init__(
        self,
        *,
        consumer_name: str,
        sessions: sessionmaker,
        handlers: Mapping[str, BatchHandler],
        processed_table: Table,
        outbox_table: Table,
        dead_letter_limit: DeadLetterLimit | None = None,
        validate_outgoing: bool = True,
    ) -> None:
        self.consumer_name = consumer_name
        self.sessions = sessions
        self.handlers = dict(handlers)
        self.processed = processed_table
        self.outbox = outbox_table
        self.limit = dead_letter_limit or DeadLetterLimit()
        # Handlers build outgoing events from validated input and their own rows; the
        # tests run with validation on, production runners may skip the second check.
        self.validate_outgoing = validate_outgoing
        self.allowed_types = {
            name: REGISTRY[name].event_types for name in self.handlers if name in REGISTRY
        }

    def _dead_letter(self, record: Record, error: InvalidEvent | ValidationError) -> DeadLetter:
        if isinstance(error, InvalidEvent):
            kind, reason = error.kind, error.reason
        else:
            kind, reason = "schema_violation", f"handler rejected: {error.messages}"
        log.warning(
            "dead letter %s[%d]@%d: %s", record.topic, record.partition, record.offset, reason
        )
        return DeadLetter(
            source=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            consumer=self.consumer_name,
            kind=kind,
            reason=reason,
        )

    def process(self, records: Sequence[Record]) -> BatchResult:
        result = BatchResult()
        decoded: list[tuple[Record, Envelope]] = []
        for record in records:
            try:
                envelope = decode(record.value, allowed_types=self.allowed_types.get(record.topic))
            except InvalidEvent as exc:
                result.dead_letters.append(self._dead_letter(record, exc))
                continue
            decoded.append((record, envelope))

        with self.sessions.begin() as session:
            fresh = self._unseen(session, decoded, result)
            try:
                with session.begin_nested():
                    outgoing = self._apply_runs(fresh, session)
                applied = fresh
            except (InvalidEvent, ValidationError):
                # One of them is bad data: find it, applying each alone.
                applied, outgoing = self._apply_one_by_one(fresh, session, result)
            result.applied = len(applied)
            result.outgoing = outgoing
            # Checked before commit: a tripped limit rolls the whole batch back.
            invalid = len(result.dead_letters)
            self.limit.check([True] * invalid + [False] * (len(records) - invalid))
            if applied:
                now = utcnow()
                session.execute(
                    insert(self.processed),
                    [
                        {"event_id": env.event_id, "topic": record.topic, "processed_at": now}
                        for record, env in applied
                    ],
                )
            if outgoing:
                session.execute(
                    insert(self.outbox),
                    outbox_rows(outgoing, validate_payload=self.validate_outgoing),
                )
        return result

    def _unseen(
        self, session: Session, decoded: Sequence[tuple[Record, Envelope]], result: BatchResult
    ) -> list[tuple[Record, Envelope]]:
        """The messages not processed before (by event id, in the database or earlier in
        this batch); counts the others as duplicates."""
        ids = [env.event_id for _, env in decoded]
        seen: set[str] = set()
        if ids:
            seen.update(
                session.scalars(
                    select(self.processed.c.event_id).where(self.processed.c.event_id.in_(ids))
                )
            )
        fresh = []
        for record, envelope in decoded:
            if envelope.event_id in seen:
                result.duplicates += 1
                continue
            seen.add(envelope.event_id)
            fresh.append((record, envelope))
        return fresh

    def _apply_runs(
        self, messages: Sequence[tuple[Record, Envelope]], session: Session
    ) -> list[Outgoing]:
        """Each run of consecutive messages of one topic goes to its handler in one call
        (poll order is kept, so per-partition order is too)."""
        outgoing: list[Outgoing] = []
        for topic, run in groupby(messages, key=lambda m: m[0].topic):
            outgoing.extend(self.handlers[topic]([env for _, env in run], session))
        return outgoing

    def _apply_one_by_one(
        self, messages: Sequence[tuple[Record, Envelope]], session: Session, result: BatchResult
    ) -> tuple[list[tuple[Record, Envelope]], list[Outgoing]]:
        applied: list[tuple[Record, Envelope]] = []
        outgoing: list[Outgoing] = []
        for record, envelope in messages:
            try:
                with session.begin_nested():
                    out = self.handlers[record.topic]([envelope], session)
            except (InvalidEvent, ValidationError) as exc:
                result.dead_letters.append(self._dead_letter(record, exc))
                continue
            applied.append((record, envelope))
            outgoing.extend(out)
        return applied, outgoing


@dataclass
class Timer:
    """Work a service does every ``interval_s`` between batches (e.g. SLA escalation). It
    runs in the consumer process, never in an API worker; an exception propagates like
    any infrastructure error."""

    interval_s: float
    run: Callable[[], object]
    next_at: float = 0.0


class ConsumerRunner:
    """Polls, applies batches through a :class:`BatchProcessor`, publishes, commits."""

    def __init__(
        self,
        *,
        consumer: KafkaConsumer,
        producer: KafkaProducer,
        processor: BatchProcessor,
        relay: OutboxRelay,
        poll_timeout_ms: int = 500,
        max_records: int = 500,
        timers: Sequence[Timer] = (),
    ) -> None:
        self.timers = list(timers)
        self.consumer = consumer
        self.producer = producer
        self.processor = processor
        self.relay = relay
        self.poll_timeout_ms = poll_timeout_ms
        self.max_records = max_records
        self._stop_requested = False

    def request_stop(self, *_: Any) -> None:
        """Signal-safe: only sets a flag."""
        self._stop_requested = True

    def install_signal_handlers(self) -> None:
        def _handler(signum: int, _frame: FrameType | None) -> None:
            log.info("signal %d: finishing the batch in hand", signum)
            self.request_stop()

        signal.signal(signal.SIGTERM, _handler)
        signal.signal(signal.SIGINT, _handler)

    def _relay(self) -> None:
        try:
            self.relay.publish_pending()
        except KafkaError as exc:
            # The rows stay unsent and durable; the next loop tries again with a new producer.
            log.warning("outbox relay failed, will retry: %s", exc)

    def _publish_dead_letters(self, dead_letters: Sequence[DeadLetter]) -> None:
        futures = [
            self.producer.send(DEADLETTER, key=d.key, value=d.value, headers=d.headers())
            for d in dead_letters
        ]
        self.producer.flush(timeout=30)
        for future in futures:
            future.get(timeout=30)  # a failure here must not commit the offsets

    def _commit(self, records: Sequence[Record]) -> None:
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            if tp not in offsets or offsets[tp].offset < r.offset + 1:
                offsets[tp] = OffsetAndMetadata(r.offset + 1, "", -1)
        try:
            self.consumer.commit(offsets)
        except CommitFailedError as exc:
            # The group rebalanced: the new owner gets these again and skips them by id.
            log.warning("offset commit failed after rebalance: %s", exc)

    def run_once(self) -> BatchResult | None:
        polled = self.consumer.poll(timeout_ms=self.poll_timeout_ms, max_records=self.max_records)
        records: list[Record] = [r for batch in polled.values() for r in batch]
        result = None
        if records:
            result = self.processor.process(records)
            if result.dead_letters:
                self._publish_dead_letters(result.dead_letters)
        now = time.monotonic()
        for timer in self.timers:
            if now >= timer.next_at:
                timer.run()
                timer.next_at = now + timer.interval_s
        self._relay()
        if records:
            self._commit(records)
        return result

    def run(self, *, max_seconds: float | None = None) -> None:
        """Run until a stop is requested (or ``max_seconds`` passes), then close cleanly."""
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        self._relay()
        try:
            while not self._stop_requested:
                if deadline is not None and time.monotonic() > deadline:
                    break
                self.run_once()
        finally:
            self.close()

    def close(self) -> None:
        self._relay()
        self.relay.close()
        self.producer.flush(timeout=10)
        self.consumer.close(autocommit=False)
        self.producer.close(timeout=10)


def build_runner(
    *,
    service: str,
    kafka: KafkaConfig,
    engine: Engine,
    handlers: Mapping[str, BatchHandler],
    processed_table: Table,
    outbox_table: Table,
    group_id: str | None = None,
    timers: Sequence[Timer] = (),
) -> ConsumerRunner:
    """The standard runner of a service: group ``service`` (unless ``group_id``), one
    producer for dead letters, a separate, replaceable one for the outbox relay."""
    return ConsumerRunner(
        consumer=make_consumer(kafka, group_id or service, handlers),
        producer=make_producer(kafka, service),
        processor=BatchProcessor(
            consumer_name=service,
            sessions=make_sessionmaker(engine),
            handlers=handlers,
            processed_table=processed_table,
            outbox_table=outbox_table,
            validate_outgoing=False,
        ),
        relay=OutboxRelay(
            engine,
            outbox_table,
            lambda: make_producer(kafka, f"{service}-relay"),
            reader_factory=lambda: make_tail_reader(kafka),
        ),
        timers=timers,
    )

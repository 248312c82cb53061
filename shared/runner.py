"""The consumer runner shared by every service.

Loop: poll a batch → decode each message → hand the new ones to the service's pure
handler, a whole run of one topic at a time, inside one database transaction → record
processed event ids and the outgoing events in the outbox in that same transaction →
commit → publish dead letters → relay the outbox (a bounded slice) → commit offsets.
Auto-commit is off; a message's offset is committed only after its effects are durable,
so a crash anywhere redelivers, and the processed-id table makes redelivery harmless.
Offsets are committed by count and time (every ``commit_every_records`` records or
``commit_every_s`` seconds, and on close), as arroyo does, not after every poll: a commit
is a broker round trip, and what a crash redelivers past the last one is skipped by id.

Batches first, one by one on failure (as arroyo's "retry the batch message by message"):
the batch is applied in one savepoint, which lets handlers read once and write with bulk
statements. If anything in it raises, that savepoint is rolled back and the batch applied
again one message per savepoint (:func:`apply_isolated`), so a bad message is found,
dead-lettered and the rest still applied; the first attempt leaves nothing behind, so
handlers need no care of their own for this. Everything a message causes — the handler's
writes, its processed id, its outgoing events — is inside its savepoint.

Error policy (the only place it is decided):
* ``InvalidEvent`` / ``marshmallow.ValidationError`` from decoding or from a handler are
  data errors: the message becomes a dead letter with its reason at once.
* Any other exception from applying a message is first checked against the
  infrastructure (:meth:`BatchProcessor.check_infrastructure`: the session's database
  answers a trivial query, a broker accepts a connection). If that fails, the error is
  the infrastructure's: :class:`InfrastructureError` propagates, nothing commits, offsets
  stay, the process exits non-zero and its supervisor restarts it. If it passes, the
  message is retried alone (:class:`RetryPolicy`, with backoff) and, if it still fails,
  it is at fault: it becomes a dead letter carrying the exception's class and message.
  No single message can stop a consumer, whatever it raises.
* Errors outside applying messages (the processed-id lookup, the commit) propagate.
* ``DeadLetterLimit`` stops the runner when most recent messages are failing: that is a
  bad deploy, not bad data, and must not pour the topic into the dead-letter topic.
* Timers (work a consumer process does between batches) get the same treatment: a
  failure with the infrastructure fine is logged and retried with growing pauses, and
  after :data:`TIMER_DEAD_LETTER_AFTER` failures in a row it is reported as a dead letter
  (``dlq.source`` = ``timer:<name>``); the timer's own work isolates failing items with
  :func:`apply_isolated` so one bad item cannot hold the rest back.

SIGTERM / SIGINT only set a flag; the loop finishes the batch in hand, commits and exits.
"""

from __future__ import annotations

import json
import logging
import random
import signal
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from itertools import groupby
from types import FrameType
from typing import Any, Protocol, TypeVar

from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import (
    CommitFailedError,
    IllegalGenerationError,
    KafkaError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)
from kafka.structs import OffsetAndMetadata, TopicPartition
from marshmallow import ValidationError
from sqlalchemy import Engine, Table, delete, insert, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from shared.config import ConfigError, KafkaConfig
from shared.db import make_sessionmaker, ping, utcnow
from shared.deadletter import DeadLetter
from shared.events import Envelope, InvalidEvent, decode
from shared.kafka import broker_reachable, make_consumer, make_producer
from shared.logs import log_context
from shared.metrics import CONSUMER_LAG, record_batch
from shared.outbox import OutboxRelay, Outgoing, outbox_rows, service_relay
from shared.topics import DEADLETTER, REGISTRY

log = logging.getLogger(__name__)

# A commit refused because this member's view of the group is changing, not failed for good.
_REBALANCING = (RebalanceInProgressError, IllegalGenerationError, UnknownMemberIdError)
# How long the commit on close may wait (the broker may be the reason we are closing).
COMMIT_TIMEOUT_MS = 5000

Handler = Callable[[Envelope, Session], Sequence[Outgoing]]
"""A handler of one event: the event and an open session in, events to publish out. It
may read and write through the session; it never commits, and knows nothing of Kafka."""

BatchHandler = Callable[[Sequence[Envelope], Session], Sequence[Outgoing]]
"""What the runner calls: events of one topic, in topic order, and an open session in;
the events to publish for all of them out. It applies all of them or raises (the runner
then retries them one per call, see the module docstring)."""

DATA_ERRORS = (InvalidEvent, ValidationError)
TIMER_DEAD_LETTER_AFTER = 5
# How often a consumer reports its lag (between polls).
LAG_EVERY_S = 5.0
T = TypeVar("T")


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


class InfrastructureError(RuntimeError):
    """The database or the broker is not fine: the process must stop and be restarted,
    not blame the message in hand."""


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


@dataclass(frozen=True)
class RetryPolicy:
    """How often a message (or a timer's item) that failed with the infrastructure fine
    is tried alone before it is dead-lettered, and the pause before each retry."""

    attempts: int = 3
    backoff_s: float = 0.05
    max_backoff_s: float = 2.0

    def pause(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based): doubling,
        with jitter so that processes failing together do not retry together."""
        base = min(self.backoff_s * 2 ** (attempt - 1), self.max_backoff_s)
        return base * random.uniform(0.5, 1.0)


def describe(error: BaseException) -> tuple[str, str]:
    """``(kind, reason)`` of an error that made a message or item fail, for dead letters."""
    if isinstance(error, InvalidEvent):
        return error.kind, error.reason
    if isinstance(error, ValidationError):
        return "schema_violation", f"handler rejected: {error.messages}"
    return "handler_error", f"{type(error).__name__}: {error}"


def apply_isolated(
    session: Session,
    items: Sequence[T],
    apply: Callable[[Sequence[T]], object],
    *,
    check_infrastructure: Callable[[Session], None],
    retry: RetryPolicy = RetryPolicy(),
) -> list[tuple[T, Exception]]:
    """Apply ``items`` in one savepoint; if that raises, apply each alone in its own.

    A data error (:data:`DATA_ERRORS`) condemns an item at once. Any other error first
    runs ``check_infrastructure(session)``, which raises :class:`InfrastructureError` when
    the fault is not the item's (that propagates: nothing is blamed); then the item is
    retried alone up to ``retry.attempts`` times. Returns the items that failed with their
    last error; all others were applied. Never commits.
    """
    if not items:
        return []
    try:
        with session.begin_nested():
            apply(items)
        return []
    except DATA_ERRORS:
        pass
    except Exception as exc:
        log.warning("a batch of %d failed (%s); applying them one by one", len(items), exc)
        check_infrastructure(session)
    failed: list[tuple[T, Exception]] = []
    for item in items:
        for attempt in range(1, retry.attempts + 1):
            try:
                with session.begin_nested():
                    apply([item])
                break
            except DATA_ERRORS as exc:
                failed.append((item, exc))
                break
            except Exception as exc:
                check_infrastructure(session)
                if attempt == retry.attempts:
                    log.error("giving up on an item after %d attempts", attempt, exc_info=exc)
                    failed.append((item, exc))
                    break
                time.sleep(retry.pause(attempt))
    return failed


def database_check(session: Session) -> None:
    """Raises :class:`InfrastructureError` unless the session's database answers."""
    try:
        with session.begin_nested():
            ping(session)
    except Exception as exc:
        raise InfrastructureError(f"the database does not answer: {exc}") from exc


@dataclass
class BatchResult:
    """What one batch did: the figures a metrics hook reads, and what to publish."""

    polled: int = 0
    applied: int = 0
    duplicates: int = 0
    dead_letters: list[DeadLetter] = field(default_factory=list)
    outgoing: list[Outgoing] = field(default_factory=list)
    elapsed_s: float = 0.0
    topics: dict[str, int] = field(default_factory=dict)


BatchHook = Callable[[BatchResult], None]
"""Called after every applied batch (e.g. to update metrics); must not raise."""


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
        check_infrastructure: Callable[[Session], None] = database_check,
        retry: RetryPolicy = RetryPolicy(),
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
        self.check_infrastructure = check_infrastructure
        self.retry = retry
        self.allowed_types = {
            name: REGISTRY[name].event_types for name in self.handlers if name in REGISTRY
        }

    def _dead_letter(self, record: Record, error: Exception) -> DeadLetter:
        kind, reason = describe(error)
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
        started = time.monotonic()
        result = BatchResult(polled=len(records))
        for record in records:
            result.topics[record.topic] = result.topics.get(record.topic, 0) + 1
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

            def apply(messages: Sequence[tuple[Record, Envelope]]) -> None:
                # Applied alone (isolating a failure): its logs name the event.
                alone = {"event_id": messages[0][1].event_id} if len(messages) == 1 else {}
                with log_context(**alone):
                    result.outgoing.extend(self._apply(messages, session))

            failed = apply_isolated(
                session,
                fresh,
                apply,
                check_infrastructure=self.check_infrastructure,
                retry=self.retry,
            )
            for (record, envelope), error in failed:
                with log_context(event_id=envelope.event_id):
                    result.dead_letters.append(self._dead_letter(record, error))
            result.applied = len(fresh) - len(failed)
            # Checked before commit: a tripped limit rolls the whole batch back.
            invalid = len(result.dead_letters)
            self.limit.check([True] * invalid + [False] * (len(records) - invalid))
        result.elapsed_s = time.monotonic() - started
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

    def _apply(
        self, messages: Sequence[tuple[Record, Envelope]], session: Session
    ) -> list[Outgoing]:
        """Everything the messages cause: each run of consecutive messages of one topic
        goes to its handler in one call (poll order is kept, so per-partition order is
        too), then their processed ids and outgoing events are written. Returns the
        events queued for publishing."""
        outgoing: list[Outgoing] = []
        for topic, run in groupby(messages, key=lambda m: m[0].topic):
            outgoing.extend(self.handlers[topic]([env for _, env in run], session))
        now = utcnow()
        session.execute(
            insert(self.processed),
            [
                {"event_id": env.event_id, "topic": record.topic, "processed_at": now}
                for record, env in messages
            ],
        )
        if outgoing:
            session.execute(
                insert(self.outbox),
                outbox_rows(outgoing, validate_payload=self.validate_outgoing),
            )
        return outgoing

    def prune(self, horizon: timedelta) -> int:
        """Forget processed ids older than ``horizon`` (a redelivery within it is still
        recognised) and sent outbox rows as old; returns rows deleted."""
        cutoff = utcnow() - horizon
        with self.sessions.begin() as session:
            done = session.execute(
                delete(self.processed).where(self.processed.c.processed_at < cutoff)
            ).rowcount
            sent = session.execute(
                delete(self.outbox).where(
                    self.outbox.c.sent_at.is_not(None), self.outbox.c.created_at < cutoff
                )
            ).rowcount
        return int(done or 0) + int(sent or 0)


@dataclass
class Timer:
    """Work a service does every ``interval_s`` between batches (e.g. SLA escalation). It
    runs in the consumer process, never in an API worker. A failure is handled by the
    runner (see the module docstring): retried with growing pauses, reported as a dead
    letter after :data:`TIMER_DEAD_LETTER_AFTER` in a row."""

    interval_s: float
    run: Callable[[], object]
    name: str = "timer"
    next_at: float = 0.0
    failures: int = 0


class ConsumerRunner:
    """Polls, applies batches through a :class:`BatchProcessor`, publishes, commits."""

    def __init__(
        self,
        *,
        consumer: KafkaConsumer,
        producer: KafkaProducer,
        processor: BatchProcessor,
        relay: OutboxRelay | None,
        poll_timeout_ms: int = 500,
        max_records: int = 500,
        timers: Sequence[Timer] = (),
        relay_max_batches: int = 5,
        on_batch: BatchHook | None = None,
        commit_every_records: int = 2000,
        commit_every_s: float = 1.0,
    ) -> None:
        self.timers = list(timers)
        self.consumer = consumer
        self.producer = producer
        self.processor = processor
        self.relay = relay
        self.poll_timeout_ms = poll_timeout_ms
        self.max_records = max_records
        # A slice per loop: a backlog (a rescore's thousands of events) never keeps the
        # consumer from polling.
        self.relay_max_batches = relay_max_batches
        self.on_batch = on_batch
        self._stop_requested = False
        # Next offset to read per partition, from what this consumer applied: with the
        # partition's high watermark (from the same fetches, no extra request) the lag.
        self._next: dict[TopicPartition, int] = {}
        self._lag_at = 0.0
        # Offsets applied but not committed yet (see the module docstring).
        self.commit_every_records = commit_every_records
        self.commit_every_s = commit_every_s
        self._pending: dict[TopicPartition, OffsetAndMetadata] = {}
        self._pending_records = 0
        self._committed_at = time.monotonic()

    def request_stop(self, *_: Any) -> None:
        """Signal-safe: only sets a flag."""
        self._stop_requested = True

    def install_signal_handlers(self) -> None:
        def _handler(signum: int, _frame: FrameType | None) -> None:
            log.info("signal %d: finishing the batch in hand", signum)
            self.request_stop()

        signal.signal(signal.SIGTERM, _handler)
        signal.signal(signal.SIGINT, _handler)

    def _relay(self, max_batches: int | None = None) -> None:
        if self.relay is None:  # a relay process of its own publishes the outbox
            return
        try:
            self.relay.publish_pending(max_batches=max_batches or self.relay_max_batches)
        except (KafkaError, OperationalError) as exc:
            # The rows stay unsent and durable; the next loop tries again (a new producer,
            # or a new transaction after a lock timeout or a deadlock between relays).
            log.warning("outbox relay failed, will retry: %s", exc)

    def _publish_dead_letters(self, dead_letters: Sequence[DeadLetter]) -> None:
        futures = [
            self.producer.send(DEADLETTER, key=d.key, value=d.value, headers=d.headers())
            for d in dead_letters
        ]
        self.producer.flush(timeout=30)
        for future in futures:
            future.get(timeout=30)  # a failure here must not commit the offsets

    def _stage(self, records: Sequence[Record]) -> None:
        """Note the offsets of applied records (effects durable, dead letters sent): the
        next position per partition, for the lag and for the next commit."""
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            position = max(self._next.get(tp, 0), r.offset + 1)
            self._next[tp] = position
            self._pending[tp] = OffsetAndMetadata(position, "", -1)
        self._pending_records += len(records)

    def commit_pending(self, *, force: bool = False) -> None:
        """Commit the staged offsets when ``commit_every_records`` records or
        ``commit_every_s`` seconds have gathered (or ``force``). Only partitions still
        assigned: one lost to a rebalance is the new owner's to commit, and committing
        our older offset over theirs would move it back."""
        if not self._pending:
            return
        due = (
            force
            or self._pending_records >= self.commit_every_records
            or time.monotonic() - self._committed_at >= self.commit_every_s
        )
        if not due:
            return
        owned = self.consumer.assignment()
        offsets = {tp: o for tp, o in self._pending.items() if tp in owned}
        self._pending, self._pending_records = {}, 0
        self._committed_at = time.monotonic()
        if not offsets:
            return
        try:
            self.consumer.commit(offsets, timeout_ms=COMMIT_TIMEOUT_MS if force else None)
        except _REBALANCING as exc:
            # The group is rebalancing (seen with 4 consumers joining at once). Dropped,
            # not kept: a partition that moves away and back could otherwise get our older
            # offset over its interim owner's. The next records of a partition still ours
            # stage a later offset that covers these; anything read again is skipped by id.
            log.info("offset commit skipped, the group is rebalancing: %s", exc)
        except CommitFailedError as exc:
            # The group rebalanced: the new owner gets these again and skips them by id.
            log.warning("offset commit failed after rebalance: %s", exc)

    def _run_timer(self, timer: Timer, now: float) -> None:
        try:
            timer.run()
        except InfrastructureError:
            raise
        except Exception as exc:
            with self.processor.sessions() as session:
                self.processor.check_infrastructure(session)
            timer.failures += 1
            pause = min(timer.interval_s * 2**timer.failures, 300.0)
            log.error(
                "timer %s failed (%d in a row); next try in %.0fs",
                timer.name,
                timer.failures,
                pause,
                exc_info=exc,
            )
            timer.next_at = now + pause
            if timer.failures == TIMER_DEAD_LETTER_AFTER:
                letter = timer_dead_letter(timer.name, self.processor.consumer_name, exc)
                self._publish_dead_letters([letter])
            return
        timer.failures = 0
        timer.next_at = now + timer.interval_s

    def run_once(self) -> BatchResult | None:
        polled = self.consumer.poll(timeout_ms=self.poll_timeout_ms, max_records=self.max_records)
        records: list[Record] = [r for batch in polled.values() for r in batch]
        result = None
        if records:
            result = self.processor.process(records)
            if result.dead_letters:
                self._publish_dead_letters(result.dead_letters)
            if self.on_batch is not None:
                try:
                    self.on_batch(result)
                except Exception:  # a metrics hook must never stop the consumer
                    log.exception("batch hook failed")
            self._stage(records)
        now = time.monotonic()
        if now >= self._lag_at:
            self._lag_at = now + LAG_EVERY_S
            self.report_lag()
        for timer in self.timers:
            if now >= timer.next_at:
                self._run_timer(timer, now)
        self._relay()
        self.commit_pending()
        return result

    def report_lag(self) -> dict[TopicPartition, int]:
        """``funnel_consumer_lag`` per partition this consumer has read: the partition's
        high watermark as its fetches last saw it, minus the next offset to apply. (Exact
        on Apache Kafka; the embedded broker reports high watermarks by batch, so it can
        under-read there, see DESIGN.md.)"""
        lags = {}
        for tp, position in self._next.items():
            high = self.consumer.highwater(tp)
            if high is None:
                continue
            lags[tp] = max(0, high - position)
            CONSUMER_LAG.labels(self.processor.consumer_name, tp.topic, str(tp.partition)).set(
                lags[tp]
            )
        return lags

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
        try:
            self.commit_pending(force=True)
        except KafkaError as exc:  # closing anyway: the next owner skips them by id
            log.warning("could not commit offsets on close: %s", exc)
        if self.relay is not None:
            self.relay.close()
        self.producer.flush(timeout=10)
        self.consumer.close(autocommit=False)
        self.producer.close(timeout=10)


def timer_dead_letter(
    timer: str,
    consumer: str,
    error: BaseException,
    *,
    key: str | None = None,
    item: Mapping[str, Any] | None = None,
) -> DeadLetter:
    """A dead letter for timer work: the timer as a whole failing again and again, or one
    item of its work (``key`` and ``item`` say which) that failed alone. There is no
    message to keep, so the value describes the work; it is not replayable onto a topic
    (``dlq.source`` is ``timer:<name>``)."""
    kind, reason = describe(error)
    return DeadLetter(
        source=f"timer:{timer}",
        partition=-1,
        offset=-1,
        key=key.encode() if key else None,
        value=json.dumps({"timer": timer, **(item or {})}, default=str).encode(),
        consumer=consumer,
        kind=kind,
        reason=reason,
    )


def dedupe_horizon(kafka: KafkaConfig, topics: Iterable[str]) -> timedelta:
    """How long processed ids are kept: ``kafka.dedupe_horizon_days``, which must be at
    least the retention of every consumed topic (else a redelivery of a message still on
    the topic could be applied twice). Raises ``ConfigError``."""
    horizon = timedelta(days=kafka.dedupe_horizon_days)
    for name in topics:
        retention = REGISTRY[name].retention if name in REGISTRY else None
        if retention is not None and horizon < retention:
            raise ConfigError(
                f"FUNNEL_DEDUPE_HORIZON_DAYS={kafka.dedupe_horizon_days:g} is shorter than "
                f"the retention of {name} ({retention.days} days)"
            )
    return horizon


def infrastructure_check(kafka: KafkaConfig) -> Callable[[Session], None]:
    """The database answers through the session and a broker accepts a connection."""

    def check(session: Session) -> None:
        database_check(session)
        if not broker_reachable(kafka):
            raise InfrastructureError(f"no broker reachable at {kafka.bootstrap_servers}")

    return check


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
    on_batch: BatchHook | None = None,
    relay: bool = True,
) -> ConsumerRunner:
    """The standard runner of a service: group ``service`` (unless ``group_id``), one
    producer for dead letters, a separate, replaceable one for the outbox relay (none
    when ``relay`` is false: a relay process publishes the outbox,
    :func:`shared.outbox.relay_main`),
    and a housekeeping timer that prunes processed ids and sent outbox rows past
    ``kafka.dedupe_horizon_days`` (checked to outlast the consumed topics' retention)."""
    horizon = dedupe_horizon(kafka, handlers)
    processor = BatchProcessor(
        consumer_name=service,
        sessions=make_sessionmaker(engine),
        handlers=handlers,
        processed_table=processed_table,
        outbox_table=outbox_table,
        validate_outgoing=False,
        check_infrastructure=infrastructure_check(kafka),
    )
    return ConsumerRunner(
        consumer=make_consumer(kafka, group_id or service, handlers),
        producer=make_producer(kafka, service),
        processor=processor,
        relay=service_relay(service, kafka, engine, outbox_table) if relay else None,
        timers=[*timers, Timer(600.0, lambda: processor.prune(horizon), name="prune")],
        on_batch=on_batch or record_batch(service),
    )

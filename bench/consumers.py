"""Consumer throughput: lead-scoring applying traffic events, against raw kafka-python
group consume + JSON decode of the same records, measured in the same run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Engine, Integer, MetaData, String, Table, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from services.lead_scoring.app import init_db
from services.lead_scoring.config import ScoringConfig
from services.lead_scoring.consumer import make_runner
from services.lead_scoring.model.history import history_fields
from services.lead_scoring.model.identity import DEFAULT_IDENTITY_RULES
from services.lead_scoring.model.scoring import ScoringModel
from services.lead_scoring.models import LeadEvent, outbox, processed_events
from services.lead_scoring.processing.batch import TrafficBatch
from services.lead_scoring.processing.identities import IdentityKey, event_keys
from shared import processes
from shared.config import KafkaConfig
from shared.db import make_engine, make_sessionmaker, utcnow
from shared.events import Envelope, encode, new_event
from shared.kafka import make_consumer, make_producer
from shared.outbox import Outgoing, insert_ignoring_duplicates, unsent
from shared.runner import ConsumerRunner, build_runner
from shared.topics import LEADS, TRAFFIC

ROOT = Path(__file__).resolve().parents[1]

# Pages per visit in the benchmark stream (a visit's page views arrive together, so a
# batch holds several of one person's: what coalescing lead.scored saves on).
SESSION_PAGES = 5


def traffic_stream(
    count: int, people: int = 1000, session: int = SESSION_PAGES
) -> Iterator[Envelope]:
    """``count`` page views by ``people`` visitors new to this run, in visits of
    ``session`` pages one after another (as browsers send them), the visitors taking
    turns."""
    run = uuid.uuid4().hex[:8]
    for i in range(count):
        path = "/pricing" if i % 10 == 3 else f"/docs/{i % 50}"
        yield new_event(
            "page",
            {"properties": {"path": path}},
            source="web",
            anonymous_id=f"b-{run}-{(i // session) % people}",
        )


def produce_traffic(
    kafka: KafkaConfig, count: int, people: int = 1000, session: int = SESSION_PAGES
) -> None:
    """:func:`traffic_stream` on the traffic topic."""
    producer = make_producer(kafka, "bench-feeder")
    for event in traffic_stream(count, people, session):
        producer.send(TRAFFIC, key=event.partition_key.encode(), value=encode(event))
    producer.flush()
    producer.close()


class _Reading:
    """Poll batches (up to 500 records) of ``consumer`` until ``count`` records are read
    or ``max_seconds`` pass; :meth:`rate` is records per second with the clock started
    at the first record (group join excluded) and stopped when asked."""

    def __init__(self, consumer: Any, count: int, max_seconds: float) -> None:
        self.consumer, self.count = consumer, count
        self.deadline = time.monotonic() + max_seconds
        self.seen = 0
        self.started: float | None = None

    def __iter__(self) -> Iterator[list[Any]]:
        while self.seen < self.count and time.monotonic() < self.deadline:
            polled = self.consumer.poll(timeout_ms=500, max_records=500)
            if not polled:
                continue
            if self.started is None:
                self.started = time.monotonic()
            records = [record for batch in polled.values() for record in batch]
            self.seen += len(records)
            yield records

    def rate(self) -> float:
        elapsed = time.monotonic() - (self.started or time.monotonic())
        return self.seen / elapsed if elapsed else 0.0


def raw_consume(kafka: KafkaConfig, count: int, max_seconds: float = 120) -> float:
    """msg/s of a fresh group reading ``count`` records and decoding each as JSON; the
    clock starts at the first record (group join excluded)."""
    consumer = make_consumer(kafka, f"bench-raw-{uuid.uuid4().hex}", [TRAFFIC])
    reading = _Reading(consumer, count, max_seconds)
    for records in reading:
        for record in records:
            json.loads(record.value)
    rate = reading.rate()
    consumer.close()
    return rate


def raw_consume_produce(kafka: KafkaConfig, count: int, max_seconds: float = 120) -> float:
    """msg/s of the least any applying consumer does: read, JSON-decode, produce one
    message per record (acks=all, as the outbox relay does), flush and commit offsets per
    poll batch. No database, no schema validation: the ceiling for lead-scoring, which
    publishes one lead event per traffic event."""
    consumer = make_consumer(kafka, f"bench-pipe-{uuid.uuid4().hex}", [TRAFFIC])
    producer = make_producer(kafka, "bench-pipe")
    reading = _Reading(consumer, count, max_seconds)
    try:
        for records in reading:
            for record in records:
                json.loads(record.value)
                producer.send(LEADS, key=record.key, value=record.value)
            producer.flush()
            consumer.commit()
        return reading.rate()
    finally:
        consumer.close(autocommit=False)
        producer.close()


_store = MetaData()
_seen = Table("seen_events", _store, Column("event_id", String(64), primary_key=True))
_people = Table(
    "people",
    _store,
    Column("person", String(128), primary_key=True),
    Column("events", Integer, nullable=False),
)


def raw_consume_store(
    kafka: KafkaConfig, database_url: str, count: int, max_seconds: float = 120
) -> float:
    """events/s of the least a consumer keeping durable state per person does: read and
    JSON-decode, then per poll batch ONE transaction that records every event id (ON
    CONFLICT DO NOTHING: exactly-once needs it) and upserts one row per person in the
    batch (coalesced), commit, then commit offsets. No validation, no rules, no outbox,
    no Kafka produce: the ceiling for lead-scoring on that database."""
    engine = make_engine(database_url)
    _store.create_all(engine)
    upsert = _upsert(engine.dialect.name)
    consumer = make_consumer(kafka, f"bench-store-{uuid.uuid4().hex}", [TRAFFIC])
    reading = _Reading(consumer, count, max_seconds)
    try:
        for records in reading:
            ids: list[dict[str, str]] = []
            per_person: dict[str, int] = {}
            for record in records:
                event = json.loads(record.value)
                ids.append({"event_id": event["event_id"]})
                person = event.get("anonymous_id") or ""
                per_person[person] = per_person.get(person, 0) + 1
            with engine.begin() as conn:
                conn.execute(insert_ignoring_duplicates(_seen, engine.dialect.name), ids)
                conn.execute(upsert, [{"person": p, "events": n} for p, n in per_person.items()])
            consumer.commit()
        rate = reading.rate()
        with engine.connect() as conn:
            stored = conn.scalar(select(func.count()).select_from(_seen)) or 0
        assert stored >= min(reading.seen, count), "the benchmark lost events"
        return rate
    finally:
        consumer.close(autocommit=False)
        engine.dispose()


def runner_floor(
    kafka: KafkaConfig,
    database_url: str,
    count: int,
    max_seconds: float = 180,
    *,
    history: bool = False,
) -> float:
    """events/s of the shared runner as lead-scoring builds it (its timers and relay
    aside) with a handler that applies nothing: validating each message
    (:func:`shared.events.decode`), skipping ids it has processed, recording the new
    ones, committing the transaction and then the offsets, on lead-scoring's tables.
    Whatever scoring does per event comes on top (and its lead events' outbox rows and
    publishing per lead), so no scoring consumer on this runner can beat it.

    ``history``: the handler also makes the one write per event scoring cannot skip,
    the event's row in its lead's history (``lead_events``, as
    :func:`.model.history.history_fields` keeps it: rescoring and splits replay it), all
    under one lead; no identities, rules, awards, lead updates or lead events."""
    engine = make_engine(database_url)
    init_db(engine)
    with make_sessionmaker(engine).begin() as session:
        store = TrafficBatch(session, ScoringModel().history_scope, since=utcnow())
        lead_id = store.create_lead(utcnow()).id
        store.flush()

    def _keys(event: Envelope) -> list[IdentityKey]:
        # What scoring keeps with the event: its identifiers under the default rules
        # (an alias's previous id as an anonymous id: nobody owns anything here).
        return event_keys(event, DEFAULT_IDENTITY_RULES, lambda _key: False)

    def keep_history(events: Sequence[Envelope], session: Session) -> list[Outgoing]:
        if history:
            session.execute(
                insert(LeadEvent),
                [{"lead_id": lead_id, **history_fields(e, _keys(e))} for e in events],
            )
        return []

    runner = build_runner(
        service="bench-floor",
        kafka=kafka,
        engine=engine,
        handlers={TRAFFIC: keep_history},
        processed_table=processed_events,
        outbox_table=outbox,
        group_id=f"bench-floor-{uuid.uuid4().hex}",
        relay=False,
    )
    deadline = time.monotonic() + max_seconds
    try:
        applied, timed, started = _run_until(runner, count, deadline)
        elapsed = time.monotonic() - (started or time.monotonic())
        with engine.connect() as conn:
            done = conn.scalar(select(func.count()).select_from(processed_events)) or 0
        assert done >= min(applied, count), "the benchmark lost events"
    finally:
        runner.close()
        engine.dispose()
    return timed / elapsed if elapsed else 0.0


def _upsert(dialect: str) -> Any:
    statement = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(_people)
    return statement.on_conflict_do_update(
        index_elements=[_people.c.person],
        set_={"events": _people.c.events + statement.excluded.events},
    )


def scoring_consume(
    kafka: KafkaConfig,
    database_url: str,
    count: int,
    max_seconds: float = 180,
    *,
    relay_process: bool = False,
) -> float:
    """events/s lead-scoring applies and publishes (decode, handler, DB commit, offsets,
    its lead events on Kafka) from a fresh group and database; clock from the first
    applied batch until ``count`` events are applied and the outbox is empty.
    ``relay_process``: the outbox is published by ``python -m services.lead_scoring
    relay`` running beside the consumer (``SCORING_RELAY_IN_CONSUMER=false``)."""
    config = ScoringConfig(
        database_url=database_url, kafka=kafka, relay_in_consumer=not relay_process
    )
    engine = make_engine(database_url)
    init_db(engine)
    runner = make_runner(config, group_id=f"bench-scoring-{uuid.uuid4().hex}")
    relay = None
    if relay_process:
        env = {
            **os.environ,
            "LEAD_SCORING_DATABASE_URL": database_url,
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "SCORING_RELAY_IN_CONSUMER": "false",
            "FUNNEL_LOG_LEVEL": "WARNING",
        }
        relay = subprocess.Popen(
            [sys.executable, "-m", "services.lead_scoring", "relay"], env=env, cwd=ROOT
        )
    deadline = time.monotonic() + max_seconds
    try:
        applied, timed, started = _run_until(runner, count, deadline)
        while _waiting(engine) and time.monotonic() < deadline:
            if runner.relay is not None:
                runner.relay.publish_pending()
            else:
                time.sleep(0.005)
        elapsed = time.monotonic() - (started or time.monotonic())
        with engine.connect() as conn:
            done = conn.scalar(select(func.count()).select_from(processed_events)) or 0
        assert done >= min(applied, count), "the benchmark lost events"
        assert not _waiting(engine), "the outbox was not drained in time"
    finally:
        runner.close()
        if relay is not None:
            processes.stop([relay], 30)
        engine.dispose()
    return timed / elapsed if elapsed else 0.0


def _run_until(
    runner: ConsumerRunner, count: int, deadline: float
) -> tuple[int, int, float | None]:
    """Run ``runner`` batch by batch until ``count`` messages are done (applied,
    duplicate or dead-lettered) or ``deadline``. Returns that count, the messages done
    after the first batch, and when the first batch finished: the clock starts there
    (the group join and the first batch excluded), and only what follows counts."""
    done = timed = 0
    started = None
    while done < count and time.monotonic() < deadline:
        result = runner.run_once()
        if result is not None:
            handled = result.applied + result.duplicates + len(result.dead_letters)
            done += handled
            if started is None:
                started = time.monotonic()
            else:
                timed += handled
    return done, timed, started


def _waiting(engine: Engine) -> int:
    with engine.connect() as conn:
        return unsent(conn, outbox)

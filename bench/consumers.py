"""Consumer throughput: lead-scoring applying traffic events, against raw kafka-python
group consume + JSON decode of the same records, measured in the same run."""

from __future__ import annotations

import json
import time
import uuid

from sqlalchemy import func, select

from services.lead_scoring.app import init_db
from services.lead_scoring.config import ScoringConfig
from services.lead_scoring.consumer import make_runner
from services.lead_scoring.models import processed_events
from shared.config import KafkaConfig
from shared.events import encode, new_event
from shared.kafka import make_consumer, make_producer
from shared.topics import LEADS, TRAFFIC

# Pages per visit in the benchmark stream (a visit's page views arrive together, so a
# batch holds several of one person's: what coalescing lead.scored saves on).
SESSION_PAGES = 5


def produce_traffic(
    kafka: KafkaConfig, count: int, people: int = 1000, session: int = SESSION_PAGES
) -> None:
    """``count`` page views by ``people`` visitors, in visits of ``session`` pages one
    after another (as browsers send them), the visitors taking turns."""
    producer = make_producer(kafka, "bench-feeder")
    run = uuid.uuid4().hex[:8]
    for i in range(count):
        path = "/pricing" if i % 10 == 3 else f"/docs/{i % 50}"
        event = new_event(
            "page",
            {"properties": {"path": path}},
            source="web",
            anonymous_id=f"b-{run}-{(i // session) % people}",
        )
        producer.send(TRAFFIC, key=event.partition_key.encode(), value=encode(event))
    producer.flush()
    producer.close()


def raw_consume(kafka: KafkaConfig, count: int, max_seconds: float = 120) -> float:
    """msg/s of a fresh group reading ``count`` records and decoding each as JSON; the
    clock starts at the first record (group join excluded)."""
    consumer = make_consumer(kafka, f"bench-raw-{uuid.uuid4().hex}", [TRAFFIC])
    seen = 0
    started = None
    deadline = time.monotonic() + max_seconds
    while seen < count and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500, max_records=500).values():
            if started is None:
                started = time.monotonic()
            for record in records:
                json.loads(record.value)
            seen += len(records)
    elapsed = time.monotonic() - (started or time.monotonic())
    consumer.close()
    return seen / elapsed if elapsed else 0.0


def raw_consume_produce(kafka: KafkaConfig, count: int, max_seconds: float = 120) -> float:
    """msg/s of the least any applying consumer does: read, JSON-decode, produce one
    message per record (acks=all, as the outbox relay does), flush and commit offsets per
    poll batch. No database, no schema validation: the ceiling for lead-scoring, which
    publishes one lead event per traffic event."""
    consumer = make_consumer(kafka, f"bench-pipe-{uuid.uuid4().hex}", [TRAFFIC])
    producer = make_producer(kafka, "bench-pipe")
    seen = 0
    started = None
    deadline = time.monotonic() + max_seconds
    try:
        while seen < count and time.monotonic() < deadline:
            polled = consumer.poll(timeout_ms=500, max_records=500)
            if polled and started is None:
                started = time.monotonic()
            for records in polled.values():
                for record in records:
                    json.loads(record.value)
                    producer.send(LEADS, key=record.key, value=record.value)
                seen += len(records)
            if polled:
                producer.flush()
                consumer.commit()
        elapsed = time.monotonic() - (started or time.monotonic())
    finally:
        consumer.close(autocommit=False)
        producer.close()
    return seen / elapsed if elapsed else 0.0


def scoring_consume(
    kafka: KafkaConfig, database_url: str, count: int, max_seconds: float = 180
) -> float:
    """events/s lead-scoring applies (decode, handler, DB commit, offsets) from a fresh
    group and database; clock from the first applied batch to the ``count``-th event."""
    config = ScoringConfig(database_url=database_url, kafka=kafka)
    runner = make_runner(config, group_id=f"bench-scoring-{uuid.uuid4().hex}")
    init_db(runner.relay.engine)
    applied = 0
    started = None
    deadline = time.monotonic() + max_seconds
    try:
        while applied < count and time.monotonic() < deadline:
            result = runner.run_once()
            if result is not None:
                if started is None:
                    started = time.monotonic()
                applied += result.applied + result.duplicates + len(result.dead_letters)
        elapsed = time.monotonic() - (started or time.monotonic())
        with runner.relay.engine.connect() as conn:
            done = conn.scalar(select(func.count()).select_from(processed_events)) or 0
        assert done >= min(applied, count), "the benchmark lost events"
    finally:
        runner.close()
    return applied / elapsed if elapsed else 0.0

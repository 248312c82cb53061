"""Replay dead letters to the topics they came from, a bounded number, then exit.

    python -m shared.replay --limit 100 [--source funnel.traffic] [--idle-seconds 5]

Reads ``funnel.deadletter`` as consumer group ``funnel-deadletter-replay`` (so a second run
continues where the first stopped), re-sends each letter's original key and value to its
source topic with a ``dlq.replayed_offset`` header, waits for every ack, then commits.
Letters from other sources (or from HTTP intake) are skipped and still committed, so use
``--source`` deliberately. Consumers are idempotent on ``event_id``: a replayed event that
was, in the meantime, applied is skipped, never double-counted.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass

from kafka import KafkaConsumer, KafkaProducer

from shared.config import Env, KafkaConfig
from shared.deadletter import parse_headers, replay_target
from shared.kafka import make_consumer, make_producer
from shared.logs import configure_logging
from shared.topics import DEADLETTER

log = logging.getLogger(__name__)
REPLAY_GROUP = "funnel-deadletter-replay"


@dataclass
class ReplayReport:
    replayed: int = 0
    skipped: int = 0


def replay(
    consumer: KafkaConsumer,
    producer: KafkaProducer,
    *,
    limit: int,
    source: str | None = None,
    idle_seconds: float = 5.0,
    max_seconds: float = 120.0,
) -> ReplayReport:
    """Replay up to ``limit`` dead letters; stops early after ``idle_seconds`` without
    messages or after ``max_seconds`` in all."""
    report = ReplayReport()
    started = last_seen = time.monotonic()
    while report.replayed < limit:
        now = time.monotonic()
        if now - last_seen > idle_seconds or now - started > max_seconds:
            break
        polled = consumer.poll(timeout_ms=500, max_records=max(1, limit - report.replayed))
        futures = []
        for records in polled.values():
            for record in records:
                last_seen = time.monotonic()
                info = parse_headers(record.headers)
                target = replay_target(info)
                if target is None or (source is not None and target != source):
                    report.skipped += 1
                    continue
                headers = [("dlq.replayed_offset", str(record.offset).encode())]
                futures.append(
                    producer.send(target, key=record.key, value=record.value, headers=headers)
                )
                report.replayed += 1
        producer.flush(timeout=30)
        for future in futures:
            future.get(timeout=30)
        if polled:
            consumer.commit()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=100, help="most letters to replay")
    parser.add_argument("--source", help="only letters from this topic")
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    env = Env()
    configure_logging(env.text("FUNNEL_LOG_LEVEL", "INFO"))
    kafka = KafkaConfig.from_env(env)
    consumer = make_consumer(kafka, REPLAY_GROUP, [DEADLETTER])
    producer = make_producer(kafka, "deadletter-replay")
    try:
        report = replay(
            consumer, producer, limit=args.limit, source=args.source, idle_seconds=args.idle_seconds
        )
    finally:
        consumer.close(autocommit=False)
        producer.close(timeout=10)
    print(f"replayed {report.replayed}, skipped {report.skipped}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Scale-out by consumer group: two lead-scoring consumer processes in one group on
PostgreSQL share one stream, and every event is applied exactly once, leaving each lead as
one consumer applying the same stream in order leaves it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import func, select

from bench.scaleout import (
    build_stream,
    check_exact,
    lead_event_copies,
    lead_outcomes,
    publish,
    wait_for_group,
)
from services.lead_scoring.app import init_db
from services.lead_scoring.config import SERVICE, ScoringConfig
from services.lead_scoring.consumer import handlers
from services.lead_scoring.models import outbox, processed_events
from shared.config import KafkaConfig
from shared.db import make_engine, make_sessionmaker
from shared.runner import BatchProcessor
from shared.topics import TRAFFIC
from tests.conftest import fresh_postgres_database, wait_for
from tests.helpers import FakeRecord

ROOT = Path(__file__).parents[2]
EVENTS, PEOPLE = 2000, 250


def test_two_consumer_processes_apply_every_event_exactly_once(
    own_broker: KafkaConfig, postgres_url: str, tmp_path: Path
) -> None:
    stream = build_stream(EVENTS, PEOPLE)
    event_ids = {json.loads(value)["event_id"] for _, value in stream}
    engine = make_engine(postgres_url)
    init_db(engine)
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": own_broker.bootstrap_servers,
        "LEAD_SCORING_DATABASE_URL": postgres_url,
        "FUNNEL_LOG_LEVEL": "WARNING",
        "FUNNEL_METRICS_PORT": "",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = (tmp_path / "consumers.log").open("ab")
    consumers = [
        subprocess.Popen(
            [sys.executable, "-m", "services.lead_scoring", "consume"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        for _ in range(2)
    ]

    def applied() -> int:
        with engine.connect() as conn:
            return conn.scalar(select(func.count()).select_from(processed_events)) or 0

    try:
        # Published once both are members, so the two share the four partitions.
        wait_for_group(own_broker, 2, consumers)
        publish(own_broker, stream)
        wait_for(lambda: applied() >= EVENTS, timeout=60, message=f"{EVENTS} applied")
        for consumer in consumers:
            consumer.terminate()
        assert [c.wait(timeout=30) for c in consumers] == [0, 0]  # drained, committed
        outcomes = check_exact(engine, own_broker, event_ids)  # none lost, doubled, dead
        # Two relays over one outbox, each claiming its rows: no lead event sent twice.
        published, copies = lead_event_copies(own_broker)
        assert published > 0 and copies == 0
    finally:
        for consumer in consumers:
            if consumer.poll() is None:
                consumer.kill()
                consumer.wait()
        log.close()
        engine.dispose()

    assert len(outcomes) == PEOPLE
    assert outcomes == one_consumer_outcomes(stream)


def one_consumer_outcomes(
    stream: list[tuple[bytes, bytes]],
) -> dict[str, tuple[int, str, int, int]]:
    """The leads one consumer makes of ``stream``, applied in order in batches of 500
    (the runner's poll size) on a database of its own; no broker."""
    with fresh_postgres_database() as url:
        engine = make_engine(url)
        init_db(engine)
        processor = BatchProcessor(
            consumer_name=SERVICE,
            sessions=make_sessionmaker(engine),
            handlers=handlers(ScoringConfig(database_url=url)),
            processed_table=processed_events,
            outbox_table=outbox,
        )
        records = [FakeRecord(TRAFFIC, 0, i, key, value) for i, (key, value) in enumerate(stream)]
        for start in range(0, len(records), 500):
            result = processor.process(records[start : start + 500])
            assert not result.dead_letters
        try:
            return lead_outcomes(engine)
        finally:
            engine.dispose()

"""The shared runner against the real broker: lead-scoring consuming traffic.

Checks the delivery contract end to end inside one service: effects applied once, poison
messages dead-lettered with their coordinates, offsets committed only after the database
commit (a restarted consumer does not re-apply), lead events published, replay works.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from sqlalchemy import func, select

from services.lead_scoring.app import init_db
from services.lead_scoring.config import ScoringConfig
from services.lead_scoring.consumer import make_runner
from services.lead_scoring.models import Lead, processed_events
from shared.config import KafkaConfig
from shared.db import make_sessionmaker
from shared.deadletter import parse_headers
from shared.events import encode, new_event
from shared.kafka import make_consumer, make_producer
from shared.replay import replay
from shared.topics import DEADLETTER, LEADS, TRAFFIC
from tests.conftest import wait_for
from tests.helpers import TopicReader


class RunningConsumer:
    def __init__(self, kafka: KafkaConfig, url: str, group: str) -> None:
        config = ScoringConfig(database_url=url, kafka=kafka)
        self.runner = make_runner(config, group_id=group)
        self.engine = self.runner.relay.engine
        init_db(self.engine)
        self.sessions = make_sessionmaker(self.engine)
        self.thread = threading.Thread(target=self.runner.run, kwargs={"max_seconds": 120})

    def __enter__(self) -> RunningConsumer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.runner.request_stop()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()

    def processed(self) -> int:
        with self.engine.connect() as conn:
            return conn.scalar(select(func.count()).select_from(processed_events)) or 0

    def lead_scores(self) -> dict[str, int]:
        with self.sessions() as s:
            return {
                lead.email or lead.id: lead.score
                for lead in s.scalars(select(Lead).where(Lead.merged_into.is_(None)))
            }


@pytest.fixture
def producer(kafka_config: KafkaConfig) -> Iterator[KafkaProducer]:
    p = make_producer(kafka_config, "test-feeder")
    yield p
    p.close()


def test_applies_once_dead_letters_poison_and_commits_after_the_transaction(
    kafka_config: KafkaConfig, producer: KafkaProducer, database_url: str
) -> None:
    anon = f"anon-{uuid.uuid4().hex}"
    email = f"{anon}@example.com"
    events = [
        new_event("page", {"properties": {"path": "/pricing"}}, source="web", anonymous_id=anon),
        new_event(
            "identify",
            {"traits": {"email": email}},
            source="web",
            anonymous_id=anon,
            user_id=f"u-{anon}",
        ),
        new_event("track", {"event": "Form Submitted"}, source="web", anonymous_id=anon),
    ]
    for e in events:
        producer.send(TRAFFIC, key=anon.encode(), value=encode(e))
    poison_key = f"poison-{uuid.uuid4().hex}".encode()
    producer.send(TRAFFIC, key=poison_key, value=b"{not json")
    producer.send(TRAFFIC, key=anon.encode(), value=encode(events[0]))  # a redelivery
    producer.flush()

    group = f"lead-scoring-{uuid.uuid4().hex}"
    url = database_url  # the scoring store on SQLite and on PostgreSQL
    dead = TopicReader(kafka_config, DEADLETTER)
    leads = TopicReader(kafka_config, LEADS)
    try:
        with RunningConsumer(kafka_config, url, group) as consumer:
            wait_for(lambda: consumer.lead_scores().get(email) == 66, message="lead scored")
            records = wait_for(
                lambda: [r for r in dead.poll() if r.key == poison_key], message="dead letter"
            )
        [letter] = records  # type: ignore[misc]
        info = parse_headers(letter.headers)
        assert info["source"] == TRAFFIC and info["kind"] == "bad_json"
        assert int(info["offset"]) >= 0 and int(info["partition"]) >= 0
        assert letter.value == b"{not json"

        published = leads.wait(
            lambda vs: any(
                v["type"] == "lead.stage_changed"
                and v["payload"]["to_stage"] == "mql"
                and v["payload"]["lead"]["email"] == email
                for v in vs
            )
        )
        mine = [v for v in published if v["payload"]["lead"]["email"] == email]
        assert len({v["event_id"] for v in mine}) == len(mine)  # each change published once
        applied = consumer.processed()

        # Same group again: offsets were committed, so nothing is applied twice.
        with RunningConsumer(kafka_config, url, group) as again:
            wait_for(lambda: again.runner.consumer.assignment(), message="assignment")
            assert again.processed() == applied
        assert consumer.lead_scores()[email] == 66
    finally:
        dead.close()
        leads.close()


def test_replay_sends_dead_letters_back_to_their_source(
    kafka_config: KafkaConfig, producer: KafkaProducer
) -> None:
    marker = uuid.uuid4().hex.encode()
    headers = [
        ("dlq.source", TRAFFIC.encode()),
        ("dlq.partition", b"0"),
        ("dlq.offset", b"7"),
        ("dlq.reason", b"test"),
        ("dlq.kind", b"bad_json"),
    ]
    producer.send(DEADLETTER, key=marker, value=b'{"fixed": true}', headers=headers)
    producer.send(
        DEADLETTER, key=marker, value=b"http", headers=[("dlq.source", b"http:/v1/track")]
    )
    producer.flush()
    traffic = TopicReader(kafka_config, TRAFFIC)
    consumer = make_consumer(kafka_config, f"replay-{uuid.uuid4().hex}", [DEADLETTER])
    try:
        report = replay(consumer, producer, limit=10_000, idle_seconds=8)
        assert report.replayed >= 1 and report.skipped >= 1
        found = wait_for(
            lambda: [r for r in traffic.poll() if r.key == marker],
            message="replayed record on the source topic",
        )
        assert [r.value for r in found] == [b'{"fixed": true}']  # type: ignore[union-attr]
    finally:
        consumer.close()
        traffic.close()


def test_the_consumer_reports_its_lag_per_partition(
    own_broker: KafkaConfig, sqlite_url: str
) -> None:
    """``funnel_consumer_lag``: the partition's end as the fetches saw it, minus what the
    consumer applied; it falls to 0 as the consumer catches up. (Each event is sent in a
    batch of its own: the embedded broker reports ends by batch.)"""
    from prometheus_client import REGISTRY

    producer = make_producer(own_broker, "test-lag")
    anon = f"anon-{uuid.uuid4().hex}"
    for i in range(30):
        event = new_event("track", {"event": f"Step {i}"}, source="web", anonymous_id=anon)
        producer.send(TRAFFIC, key=anon.encode(), value=encode(event))
        producer.flush()
    producer.close()
    runner = make_runner(ScoringConfig(database_url=sqlite_url, kafka=own_broker), group_id="lag")
    init_db(runner.relay.engine)
    # The partitions assigned by hand: what is under test is the lag, not how long the
    # embedded broker takes to form a group (from seconds to most of a minute here).
    runner.consumer.close()
    runner.consumer = KafkaConsumer(
        bootstrap_servers=own_broker.bootstrap_servers,
        group_id="lag",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    partitions = runner.consumer.partitions_for_topic(TRAFFIC) or set()
    runner.consumer.assign([TopicPartition(TRAFFIC, p) for p in sorted(partitions)])
    runner.max_records = 5
    try:
        lags = wait_for(
            lambda: runner.run_once() and runner.report_lag(), timeout=60, message="first batch"
        )
        assert isinstance(lags, dict)
        [(tp, lag)] = lags.items()
        assert tp.topic == TRAFFIC and lag == 25  # 30 at the end, 5 applied
        labels = {"consumer": "lead-scoring", "topic": TRAFFIC, "partition": str(tp.partition)}
        assert REGISTRY.get_sample_value("funnel_consumer_lag", labels) == 25
        wait_for(
            lambda: (runner.run_once() or True) and runner.report_lag()[tp] == 0,
            timeout=60,
            message="caught up",
        )
        assert REGISTRY.get_sample_value("funnel_consumer_lag", labels) == 0
    finally:
        runner.close()

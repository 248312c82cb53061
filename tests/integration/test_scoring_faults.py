"""lead-scoring under kill -9: the consumer process is killed several times while 10,000
events flow through a real broker. Every event is counted exactly once (processed ids are
recorded in the same transaction as the effects), each lead event is published exactly
once, and replaying the whole topic from offset 0 leaves every score unchanged."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from kafka import KafkaConsumer
from kafka.structs import OffsetAndMetadata, TopicPartition
from sqlalchemy import func, select

from services.lead_scoring.app import init_db
from services.lead_scoring.config import SERVICE
from services.lead_scoring.models import Lead, LeadEvent, processed_events
from shared.broker import EmbeddedBroker, free_port
from shared.config import KafkaConfig
from shared.db import make_engine
from shared.events import encode, new_event
from shared.kafka import ensure_topics, make_producer
from shared.topics import LEADS, TRAFFIC
from tests.conftest import wait_for
from tests.helpers import TopicReader

ROOT = Path(__file__).parents[2]
PEOPLE, VIEWS = 500, 20  # 10,000 events


def test_kill_9_never_double_counts_and_replay_changes_nothing(tmp_path: Path) -> None:
    broker = EmbeddedBroker(free_port(), tmp_path / "broker.log").start()
    kafka = KafkaConfig(bootstrap_servers=broker.bootstrap_servers)
    db_url = f"sqlite:///{tmp_path / 'scoring.db'}"
    engine = make_engine(db_url)
    init_db(engine)
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "LEAD_SCORING_DATABASE_URL": db_url,
    }
    log = (tmp_path / "consumer.log").open("ab")

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "services.lead_scoring", "consume"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )

    def processed() -> int:
        with engine.connect() as conn:
            return conn.scalar(select(func.count()).select_from(processed_events)) or 0

    consumer = start()
    try:
        ensure_topics(kafka)
        producer = make_producer(kafka, "feeder")
        for view in range(VIEWS):
            for person in range(PEOPLE):
                path = "/pricing" if view == 3 else f"/docs/{view}"
                event = new_event(
                    "page", {"properties": {"path": path}}, source="web", anonymous_id=f"p-{person}"
                )
                producer.send(TRAFFIC, key=event.partition_key.encode(), value=encode(event))
        producer.flush()
        producer.close()

        kills = 0
        for threshold in (2000, 5000, 8000):
            wait_for(
                lambda t=threshold: processed() >= t, timeout=180, message=f"{threshold} processed"
            )
            consumer.kill()  # SIGKILL: no flag, no drain, no commit
            consumer.wait()
            kills += 1
            consumer = start()
        wait_for(lambda: processed() == PEOPLE * VIEWS, timeout=240, message="all processed")
        assert kills == 3

        expected = VIEWS + 10  # one point per view, ten once for pricing
        with engine.connect() as conn:
            scores = Counter(conn.scalars(select(Lead.score)))
            assert conn.scalar(select(func.count()).select_from(LeadEvent)) == PEOPLE * VIEWS
        assert scores == {expected: PEOPLE}

        # Every input's points were published (in its batch's coalesced lead.scored),
        # each exactly once, and no event is on the topic twice.
        def causes(values: list[dict]) -> Counter[tuple[str, str]]:
            return Counter(
                (point["event_id"], point["rule_id"])
                for v in values
                if v["type"] == "lead.scored"
                for point in v["payload"]["points"]
            )

        reader = TopicReader(kafka, LEADS)
        values = reader.wait(
            lambda vs: len({c for c, _ in causes(vs)}) >= PEOPLE * VIEWS, timeout=120
        )
        time.sleep(2)
        values = reader.wait(lambda vs: True)
        reader.close()
        assert max(Counter(v["event_id"] for v in values).values()) == 1
        points = causes(values)
        assert len({cause for cause, _ in points}) == PEOPLE * VIEWS
        assert max(points.values()) == 1

        # Replay: stop, rewind the group to offset 0, start again.
        consumer.terminate()
        assert consumer.wait(timeout=60) == 0  # SIGTERM drains and exits cleanly
        rewind = KafkaConsumer(
            bootstrap_servers=kafka.bootstrap_servers, group_id=SERVICE, enable_auto_commit=False
        )
        partitions = [TopicPartition(TRAFFIC, p) for p in rewind.partitions_for_topic(TRAFFIC)]
        before = {tp: rewind.committed(tp) for tp in partitions}
        rewind.commit({tp: OffsetAndMetadata(0, "", -1) for tp in partitions})
        rewind.close()
        consumer = start()

        def caught_up() -> bool:
            probe = KafkaConsumer(
                bootstrap_servers=kafka.bootstrap_servers,
                group_id=SERVICE,
                enable_auto_commit=False,
            )
            try:
                return all((probe.committed(tp) or 0) >= (before[tp] or 0) for tp in partitions)
            finally:
                probe.close()

        wait_for(caught_up, timeout=120, message="replay caught up")
        with engine.connect() as conn:
            assert Counter(conn.scalars(select(Lead.score))) == {expected: PEOPLE}
            assert conn.scalar(select(func.count()).select_from(LeadEvent)) == PEOPLE * VIEWS
        assert processed() == PEOPLE * VIEWS
    finally:
        if consumer.poll() is None:
            consumer.kill()
            consumer.wait()
        log.close()
        broker.stop()

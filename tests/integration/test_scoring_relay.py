"""lead-scoring's relay in its own process (``python -m services.lead_scoring relay``), as
intake's is: with ``SCORING_RELAY_IN_CONSUMER=false`` the consumer publishes nothing, and
the relay process sends every outbox row once, stamps it, and stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

from services.lead_scoring.app import init_db
from services.lead_scoring.config import ScoringConfig
from services.lead_scoring.consumer import make_runner
from services.lead_scoring.models import outbox
from shared.config import KafkaConfig
from shared.db import make_engine
from shared.events import new_event
from shared.kafka import ensure_topics, read_from_start
from shared.outbox import Outgoing, enqueue, unsent
from shared.topics import Topic
from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]


def test_the_relay_process_publishes_what_the_consumer_leaves(
    sqlite_url: str, kafka_config: KafkaConfig
) -> None:
    config = ScoringConfig(database_url=sqlite_url, kafka=kafka_config, relay_in_consumer=False)
    engine = make_engine(sqlite_url)
    init_db(engine)
    runner = make_runner(config, group_id=f"test-{uuid.uuid4().hex}")
    try:
        assert runner.relay is None  # the consumer leaves the outbox alone
    finally:
        runner.close()

    topic = f"test-scoring-relay-{uuid.uuid4().hex[:8]}"  # its own: the broker is shared
    ensure_topics(
        kafka_config,
        [Topic(topic, key="k", event_types=frozenset(), producers=(), consumers=(), partitions=1)],
    )
    events = [
        Outgoing(topic, "k", new_event("page", {}, source="t", anonymous_id="a")) for _ in range(40)
    ]
    with engine.begin() as conn:
        enqueue(conn, outbox, events)

    env = {
        **os.environ,
        "LEAD_SCORING_DATABASE_URL": sqlite_url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_config.bootstrap_servers,
    }
    # Beside consumers that relay this SQLite outbox themselves, it refuses to start.
    refused = subprocess.run(
        [sys.executable, "-m", "services.lead_scoring", "relay"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        timeout=60,
    )
    assert refused.returncode != 0
    assert b"SCORING_RELAY_IN_CONSUMER=false" in refused.stderr
    env["SCORING_RELAY_IN_CONSUMER"] = "false"
    relay = subprocess.Popen(
        [sys.executable, "-m", "services.lead_scoring", "relay"], env=env, cwd=ROOT
    )
    reader = read_from_start(kafka_config, topic)
    seen: Counter[str] = Counter()
    try:

        def all_sent() -> bool:
            for batch in reader.poll(timeout_ms=300).values():
                seen.update(new_id(r.value) for r in batch)
            return len(seen) >= len(events)

        wait_for(all_sent, timeout=60, message="the relay process publishing the outbox")

        def stamped() -> bool:
            with engine.connect() as conn:
                return unsent(conn, outbox) == 0

        wait_for(stamped, timeout=30, message="every row stamped sent")
    finally:
        reader.close()
        relay.send_signal(signal.SIGTERM)
        code = relay.wait(timeout=30)
        engine.dispose()
    assert code == 0
    assert seen == Counter({e.envelope.event_id: 1 for e in events})


def new_id(value: bytes) -> str:
    return str(json.loads(value)["event_id"])

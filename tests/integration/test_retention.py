"""Nothing grows without bound, and pruning never costs exactly-once: on a broker of its
own with SQLite and PostgreSQL. Replaying the whole traffic topic within the horizon
double-counts nothing; once rows are older than their horizon (aged here by moving their
timestamps back), housekeeping removes processed ids, sent outbox rows of intake and of
the consumer, and failed events — and only those."""

from __future__ import annotations

import base64
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select, update

from services.lead_scoring.app import init_db as init_scoring
from services.lead_scoring.config import ScoringConfig
from services.lead_scoring.consumer import make_runner
from services.lead_scoring.models import Lead, outbox, processed_events
from services.traffic_intake import failed
from services.traffic_intake.models import failed_events
from services.traffic_intake.state import STATE as INTAKE_STATE
from shared.config import KafkaConfig
from shared.db import make_engine, utcnow
from shared.kafka import make_producer
from shared.outbox import OutboxRelay, RelayLoop
from shared.runner import ConsumerRunner, dedupe_horizon
from shared.topics import TRAFFIC
from tests.conftest import wait_for
from tests.helpers import intake_app

WRITE_KEY = "wk-retention"
PEOPLE = 20


def _run_until(runner: ConsumerRunner, condition: Callable[[], bool], what: str) -> None:
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        wait_for(condition, timeout=90, message=what)
        time.sleep(1.0)  # a little longer: a double count would show now
    finally:
        runner.request_stop()
        thread.join(timeout=30)


def test_pruning_past_the_horizon_keeps_exactly_once(
    own_broker: KafkaConfig, database_urls: Callable[[], str], tmp_path: Path
) -> None:
    kafka = own_broker
    intake = intake_app(tmp_path / "intake.db", WRITE_KEY, kafka)
    state = intake.extensions[INTAKE_STATE]
    client = intake.test_client()
    auth = {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}
    batch = [
        {"type": "page", "anonymousId": f"a{i}", "properties": {"path": "/pricing"}}
        for i in range(PEOPLE)
    ] + [{"type": "track", "anonymousId": "a0"}]  # no event name: kept as a failed event
    assert client.post("/v1/batch", json={"batch": batch}, headers=auth).json["accepted"] == PEOPLE
    relay = OutboxRelay(state.engine, state.outbox, lambda: make_producer(kafka, "t-relay"))
    while relay.publish_pending():
        pass

    url = database_urls()
    init_scoring(make_engine(url))
    config = ScoringConfig(database_url=url, kafka=kafka)
    engine = make_engine(url)

    def count(table: object) -> int:
        with engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(table)) or 0)

    def total_score() -> int:
        with engine.connect() as conn:
            return int(conn.scalar(select(func.sum(Lead.score))) or 0)

    first = make_runner(config, f"g-{uuid.uuid4().hex[:8]}")
    _run_until(first, lambda: count(processed_events) == PEOPLE, "the first pass")
    scored = total_score()
    assert scored == PEOPLE * 11  # a page view and pricing intent each

    # Replay the whole topic (a new group starts at offset 0) within the horizon.
    replay = make_runner(config, f"replay-{uuid.uuid4().hex[:8]}")
    seen = {"duplicates": 0}

    def count_duplicates(result: object) -> None:
        seen["duplicates"] += result.duplicates  # type: ignore[attr-defined]

    replay.on_batch = count_duplicates
    _run_until(replay, lambda: seen["duplicates"] >= PEOPLE, "the replay")
    assert total_score() == scored and count(processed_events) == PEOPLE
    assert count(outbox) > 0

    # Time passes beyond every horizon: move the rows' timestamps back.
    horizon = dedupe_horizon(kafka, [TRAFFIC])
    long_ago = utcnow() - horizon - timedelta(days=1)
    with engine.begin() as conn:
        conn.execute(update(processed_events).values(processed_at=long_ago))
        conn.execute(update(outbox).values(created_at=long_ago))
    with state.engine.begin() as conn:
        conn.execute(update(state.outbox).values(created_at=long_ago))
        conn.execute(update(failed_events).values(received_at=utcnow() - timedelta(days=29)))
    unsent = make_runner(config, f"g-{uuid.uuid4().hex[:8]}")
    with engine.begin() as conn:  # one consumer row still unsent: never pruned
        conn.execute(
            update(outbox)
            .where(outbox.c.id == select(func.min(outbox.c.id)).scalar_subquery())
            .values(sent_at=None)
        )
    assert unsent.processor.prune(horizon) > 0
    unsent.close()
    loop = RelayLoop(
        relay,
        dedupe_window=timedelta(days=7),
        housekeeping=lambda: failed.prune(state.engine, utcnow() - timedelta(days=30)),
    )
    loop.housekeep()
    with state.engine.connect() as conn:  # 29 days old: within its 30-day retention
        assert conn.scalar(select(func.count()).select_from(failed_events)) == 1
    with state.engine.begin() as conn:
        conn.execute(update(failed_events).values(received_at=utcnow() - timedelta(days=31)))
    loop.housekeep()
    relay.close()
    assert count(processed_events) == 0
    assert count(outbox) == 1  # the unsent one
    with state.engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(state.outbox)) == 0
        assert conn.scalar(select(func.count()).select_from(failed_events)) == 0
    assert total_score() == scored  # pruning touches bookkeeping, never the leads

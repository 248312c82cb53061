"""Timers in a consumer process: a failing timer never stops the consumer while the
infrastructure is fine (it backs off and is reported as a dead letter), and stops it when
the infrastructure is not. Housekeeping prunes processed ids and sent outbox rows past the
horizon. Kafka is replaced by two small stand-ins (this is the runner's own logic); the
database is real SQLite."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, func, insert, select, update
from sqlalchemy.orm import Session

from shared.config import ConfigError, KafkaConfig
from shared.db import make_engine, make_sessionmaker, outbox_table, processed_events_table, utcnow
from shared.deadletter import parse_headers
from shared.outbox import OutboxRelay
from shared.runner import (
    TIMER_DEAD_LETTER_AFTER,
    BatchProcessor,
    ConsumerRunner,
    InfrastructureError,
    Timer,
    dedupe_horizon,
)
from shared.topics import DEADLETTER, TRAFFIC

metadata = MetaData()
processed = processed_events_table(metadata)
outbox = outbox_table(metadata)


class IdleConsumer:
    def poll(self, **_: Any) -> dict:
        return {}

    def commit(self, *_: Any) -> None:
        raise AssertionError("nothing was polled: nothing to commit")

    def close(self, **_: Any) -> None:
        pass


@dataclass
class Sent:
    value: Any

    def get(self, timeout: float) -> Any:
        return self.value


@dataclass
class RecordingProducer:
    sent: list[tuple[str, bytes | None, list[tuple[str, bytes]]]] = field(default_factory=list)

    def send(self, topic: str, key: Any = None, value: Any = None, headers: Any = None) -> Sent:
        self.sent.append((topic, value, headers or []))
        return Sent(None)

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self, timeout: float | None = None) -> None:
        pass


@pytest.fixture
def runner_parts(tmp_path: Path) -> tuple[ConsumerRunner, RecordingProducer, BatchProcessor]:
    engine = make_engine(f"sqlite:///{tmp_path / 'timers.db'}")
    metadata.create_all(engine)
    producer = RecordingProducer()
    processor = BatchProcessor(
        consumer_name="test",
        sessions=make_sessionmaker(engine),
        handlers={},
        processed_table=processed,
        outbox_table=outbox,
    )

    def no_producer() -> Any:
        raise AssertionError("nothing to relay")

    runner = ConsumerRunner(
        consumer=IdleConsumer(),  # type: ignore[arg-type]
        producer=producer,  # type: ignore[arg-type]
        processor=processor,
        relay=OutboxRelay(engine, outbox, no_producer),
        poll_timeout_ms=0,
    )
    return runner, producer, processor


def test_a_failing_timer_backs_off_and_is_reported_not_fatal(runner_parts) -> None:
    runner, producer, _ = runner_parts
    calls = []

    def broken() -> None:
        calls.append(1)
        raise ValueError("bad row in the SLA query")

    timer = Timer(interval_s=1.0, run=broken, name="sla")
    runner.timers = [timer]
    pauses = []
    for _ in range(TIMER_DEAD_LETTER_AFTER + 2):
        timer.next_at = 0.0  # due now, whatever the backoff said
        runner.run_once()
        pauses.append(timer.next_at)
    assert len(calls) == TIMER_DEAD_LETTER_AFTER + 2  # the consumer kept running
    assert timer.failures == TIMER_DEAD_LETTER_AFTER + 2
    [(topic, value, headers)] = producer.sent  # reported once, not every time
    info = parse_headers(headers)
    assert topic == DEADLETTER and value == b'{"timer": "sla"}'
    assert (info["source"], info["kind"]) == ("timer:sla", "handler_error")
    assert info["reason"] == "ValueError: bad row in the SLA query"


def test_a_timer_succeeding_again_resets_its_backoff(runner_parts) -> None:
    runner, _, _ = runner_parts
    outcomes = iter([RuntimeError("once"), None])

    def flaky() -> None:
        outcome = next(outcomes)
        if outcome:
            raise outcome

    timer = Timer(interval_s=5.0, run=flaky, name="rescore")
    runner.timers = [timer]
    runner.run_once()
    assert timer.failures == 1 and timer.next_at > 0
    timer.next_at = 0.0
    runner.run_once()
    assert timer.failures == 0


def test_a_timer_failure_with_the_database_down_stops_the_consumer(runner_parts) -> None:
    runner, producer, processor = runner_parts

    def database_down(session: Session) -> None:
        raise InfrastructureError("no database")

    processor.check_infrastructure = database_down

    def broken() -> None:
        raise OSError("connection reset")

    runner.timers = [Timer(interval_s=1.0, run=broken, name="sla")]
    with pytest.raises(InfrastructureError):
        runner.run_once()
    assert producer.sent == []


def test_housekeeping_prunes_past_the_horizon_only(runner_parts) -> None:
    _, _, processor = runner_parts
    old, recent = utcnow() - timedelta(days=20), utcnow() - timedelta(days=1)
    with processor.sessions.begin() as session:
        session.execute(
            insert(processed),
            [
                {"event_id": "old", "topic": TRAFFIC, "processed_at": old},
                {"event_id": "recent", "topic": TRAFFIC, "processed_at": recent},
            ],
        )
        rows = [
            {"event_id": e, "topic": TRAFFIC, "key": "k", "value": b"v", "created_at": at}
            for e, at in (("sent-old", old), ("unsent-old", old), ("sent-recent", recent))
        ]
        session.execute(insert(outbox), rows)
        session.execute(
            update(outbox).where(outbox.c.event_id != "unsent-old").values(sent_at=utcnow())
        )
    assert processor.prune(timedelta(days=14)) == 2
    with processor.sessions() as session:
        assert list(session.scalars(select(processed.c.event_id))) == ["recent"]
        assert sorted(session.scalars(select(outbox.c.event_id))) == ["sent-recent", "unsent-old"]
        assert session.scalar(select(func.count()).select_from(processed)) == 1


def test_the_horizon_must_outlast_the_topics_retention() -> None:
    assert dedupe_horizon(KafkaConfig(dedupe_horizon_days=14), [TRAFFIC]) == timedelta(days=14)
    with pytest.raises(ConfigError, match="FUNNEL_DEDUPE_HORIZON_DAYS"):
        dedupe_horizon(KafkaConfig(dedupe_horizon_days=3), [TRAFFIC])

"""The outbox relay against the real broker: relays sharing one PostgreSQL outbox take
turns (nothing sent twice, nothing locked); a batch sent but not stamped is read back
before anything is sent again, so it is not on the topic twice; a row Kafka refuses as too
large becomes a dead letter instead of blocking every row behind it."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import MetaData, func, select
from sqlalchemy.exc import OperationalError

from shared.config import KafkaConfig
from shared.db import make_engine, outbox_table
from shared.deadletter import parse_headers
from shared.events import new_event
from shared.kafka import ensure_topics, make_producer, make_tail_reader, read_from_start
from shared.outbox import OutboxRelay, Outgoing, enqueue, unsent
from shared.topics import DEADLETTER, Topic
from tests.conftest import wait_for


def _setup(database_url: str, kafka: KafkaConfig, count: int) -> tuple[Any, Any, str]:
    topic = f"test-relay-{uuid.uuid4().hex[:8]}"
    ensure_topics(
        kafka,
        [Topic(topic, key="k", event_types=frozenset(), producers=(), consumers=(), partitions=1)],
    )
    metadata = MetaData()
    table = outbox_table(metadata, f"outbox_{uuid.uuid4().hex[:8]}")
    engine = make_engine(database_url)
    metadata.create_all(engine)
    events = [
        Outgoing(topic, "k", new_event("page", {}, source="w", anonymous_id="a"))
        for _ in range(count)
    ]
    with engine.begin() as conn:
        enqueue(conn, table, events)
    return engine, table, topic


def _relay(engine: Any, table: Any, kafka: KafkaConfig) -> OutboxRelay:
    return OutboxRelay(
        engine,
        table,
        lambda: make_producer(kafka, "test-relay"),
        batch_size=50,
        reader_factory=lambda: make_tail_reader(kafka),
    )


def _on_topic(kafka: KafkaConfig, topic: str, at_least: int) -> Counter[bytes]:
    reader = read_from_start(kafka, topic)
    seen: list[bytes] = []

    def enough() -> bool:
        for batch in reader.poll(timeout_ms=300).values():
            seen.extend(r.value for r in batch)
        return len(seen) >= at_least

    try:
        wait_for(enough, timeout=30, message=f"{at_least} records on {topic}")
        for batch in reader.poll(timeout_ms=1000).values():  # and nothing more
            seen.extend(r.value for r in batch)
    finally:
        reader.close()
    return Counter(seen)


def test_relays_sharing_an_outbox_take_turns(postgres_url: str, kafka_config: KafkaConfig) -> None:
    engine, table, topic = _setup(postgres_url, kafka_config, 120)
    first, second = _relay(engine, table, kafka_config), _relay(engine, table, kafka_config)
    try:
        with engine.begin() as holder:  # the first relay, mid-send
            holder.execute(select(func.pg_advisory_xact_lock(first._lock_key)))
            assert second.publish_pending() == 0
            # Nothing is locked: new rows go in while the relay holds its turn.
            with engine.begin() as conn:
                enqueue(
                    conn,
                    table,
                    [Outgoing(topic, "k", new_event("page", {}, source="w", anonymous_id="b"))],
                )
        assert second.publish_pending() + first.publish_pending() == 121
        copies = _on_topic(kafka_config, topic, 121)
        assert len(copies) == 121 and max(copies.values()) == 1
    finally:
        first.close()
        second.close()
        engine.dispose()


def test_a_batch_sent_but_not_stamped_is_read_back_not_sent_again(
    database_url: str, kafka_config: KafkaConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, table, topic = _setup(database_url, kafka_config, 30)
    relay = _relay(engine, table, kafka_config)
    relay._uncertain = False  # a relay that has run before: nothing in doubt

    def lost_connection(*_: Any) -> None:
        raise OperationalError("UPDATE outbox", {}, Exception("server closed the connection"))

    try:
        with monkeypatch.context() as patch:
            patch.setattr(relay, "_stamp", lost_connection)
            with pytest.raises(OperationalError):
                relay.publish_pending()  # sent, then the stamp failed
        assert relay.publish_pending() == 0  # read back and stamped, not sent again
        with engine.connect() as conn:
            assert unsent(conn, table) == 0
        copies = _on_topic(kafka_config, topic, 30)
        assert len(copies) == 30 and max(copies.values()) == 1
    finally:
        relay.close()
        engine.dispose()


def test_a_row_too_large_for_kafka_is_dead_lettered_not_retried_forever(
    database_url: str, kafka_config: KafkaConfig
) -> None:
    engine, table, topic = _setup(database_url, kafka_config, 0)
    huge = Outgoing(
        topic, "k", new_event("page", {"blob": "x" * 1_100_000}, source="w", anonymous_id="a")
    )
    after = [
        Outgoing(topic, "k", new_event("page", {}, source="w", anonymous_id="a")) for _ in range(5)
    ]
    with engine.begin() as conn:
        enqueue(conn, table, [huge, *after], validate_payload=False)
    relay = _relay(engine, table, kafka_config)
    try:
        assert relay.publish_pending() == 6  # not stuck on the first row
        copies = _on_topic(kafka_config, topic, 5)
        assert len(copies) == 5  # the rows behind it, each once
        with engine.connect() as conn:
            assert unsent(conn, table) == 0
        letters = _dead_letters(kafka_config, f"outbox:{table.name}")
        assert [info["kind"] for info in letters] == ["too_large"]
        assert huge.envelope.event_id in letters[0]["reason"]
    finally:
        relay.close()
        engine.dispose()


def _dead_letters(kafka: KafkaConfig, source: str) -> list[dict[str, str]]:
    """The headers of the dead letters from ``source`` (the dead-letter topic is shared)."""
    reader = read_from_start(kafka, DEADLETTER)
    found: list[dict[str, str]] = []

    def one() -> bool:
        for batch in reader.poll(timeout_ms=300).values():
            found.extend(
                info for r in batch if (info := parse_headers(r.headers))["source"] == source
            )
        return bool(found)

    try:
        wait_for(one, timeout=30, message=f"a dead letter from {source}")
    finally:
        reader.close()
    return found

"""Offsets are committed by count and time, and on close, never for a partition this
consumer no longer owns. Kafka is replaced by a scripted stand-in (this is the runner's
own logic); the database is real SQLite."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kafka.errors import RebalanceInProgressError
from kafka.structs import OffsetAndMetadata, TopicPartition
from sqlalchemy import MetaData
from sqlalchemy.orm import Session

from shared.db import make_engine, make_sessionmaker, outbox_table, processed_events_table
from shared.events import Envelope, encode, new_event
from shared.outbox import OutboxRelay, Outgoing
from shared.runner import BatchProcessor, ConsumerRunner
from shared.topics import TRAFFIC

metadata = MetaData()
processed = processed_events_table(metadata)
outbox = outbox_table(metadata)
P0, P1 = TopicPartition(TRAFFIC, 0), TopicPartition(TRAFFIC, 1)


@dataclass
class Rec:
    topic: str
    partition: int
    offset: int
    value: bytes
    key: bytes | None = None
    headers: list[Any] = field(default_factory=list)
    timestamp: int = 0


@dataclass
class ScriptedConsumer:
    """Hands out the scripted polls in turn (then nothing) and records commits."""

    polls: list[list[Rec]]
    owned: set[TopicPartition] = field(default_factory=lambda: {P0, P1})
    commits: list[dict[TopicPartition, int]] = field(default_factory=list)
    refuse: list[Exception] = field(default_factory=list)  # raised by the next commits

    def poll(self, **_: Any) -> dict[TopicPartition, list[Rec]]:
        if not self.polls:
            return {}
        records = self.polls.pop(0)
        out: dict[TopicPartition, list[Rec]] = {}
        for r in records:
            out.setdefault(TopicPartition(r.topic, r.partition), []).append(r)
        return out

    def assignment(self) -> set[TopicPartition]:
        return set(self.owned)

    def commit(
        self, offsets: dict[TopicPartition, OffsetAndMetadata], timeout_ms: int | None = None
    ) -> None:
        if self.refuse:
            raise self.refuse.pop(0)
        self.commits.append({tp: o.offset for tp, o in offsets.items()})

    def highwater(self, _tp: TopicPartition) -> None:
        return None

    def close(self, **_: Any) -> None:
        pass


class IdleProducer:
    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self, timeout: float | None = None) -> None:
        pass


def _records(partition: int, offsets: range) -> list[Rec]:
    return [
        Rec(
            TRAFFIC,
            partition,
            offset,
            encode(new_event("page", {"properties": {}}, source="t", anonymous_id=f"a{offset}")),
        )
        for offset in offsets
    ]


def _runner(tmp_path: Path, consumer: ScriptedConsumer, **kwargs: Any) -> ConsumerRunner:
    engine = make_engine(f"sqlite:///{tmp_path / 'commits.db'}")
    metadata.create_all(engine)

    def handle(events: Sequence[Envelope], session: Session) -> list[Outgoing]:
        return []

    processor = BatchProcessor(
        consumer_name="test",
        sessions=make_sessionmaker(engine),
        handlers={TRAFFIC: handle},
        processed_table=processed,
        outbox_table=outbox,
    )

    def no_producer() -> Any:
        raise AssertionError("nothing to relay")

    return ConsumerRunner(
        consumer=consumer,  # type: ignore[arg-type]
        producer=IdleProducer(),  # type: ignore[arg-type]
        processor=processor,
        relay=OutboxRelay(engine, outbox, no_producer),
        poll_timeout_ms=0,
        **kwargs,
    )


@pytest.fixture
def never_by_time() -> dict[str, Any]:
    return {"commit_every_s": 3600.0}


def test_offsets_are_committed_once_enough_records_gathered(
    tmp_path: Path, never_by_time: dict[str, Any]
) -> None:
    consumer = ScriptedConsumer([_records(0, range(0, 2)), _records(1, range(0, 2))])
    runner = _runner(tmp_path, consumer, commit_every_records=4, **never_by_time)
    runner.run_once()
    assert consumer.commits == []  # 2 of 4
    runner.run_once()
    assert consumer.commits == [{P0: 2, P1: 2}]
    runner.run_once()  # nothing new: nothing to commit
    assert len(consumer.commits) == 1


def test_offsets_are_committed_after_a_while_even_when_idle(tmp_path: Path) -> None:
    consumer = ScriptedConsumer([_records(0, range(5, 7))])
    runner = _runner(tmp_path, consumer, commit_every_records=1000, commit_every_s=3600.0)
    runner.run_once()
    assert consumer.commits == []
    runner.commit_every_s = 0.0  # the time has come: the next loop commits, polled or not
    runner.run_once()
    assert consumer.commits == [{P0: 7}]


def test_close_commits_what_is_left(tmp_path: Path, never_by_time: dict[str, Any]) -> None:
    consumer = ScriptedConsumer([_records(1, range(0, 3))])
    runner = _runner(tmp_path, consumer, commit_every_records=1000, **never_by_time)
    runner.run_once()
    runner.close()
    assert consumer.commits == [{P1: 3}]


def test_a_partition_lost_to_a_rebalance_is_not_committed(
    tmp_path: Path, never_by_time: dict[str, Any]
) -> None:
    consumer = ScriptedConsumer([_records(0, range(0, 2)) + _records(1, range(0, 2))])
    runner = _runner(tmp_path, consumer, commit_every_records=1000, **never_by_time)
    runner.run_once()
    consumer.owned = {P1}  # P0 went to another member, which commits it from now on
    runner.close()
    assert consumer.commits == [{P1: 2}]


def test_a_commit_refused_by_a_rebalance_is_covered_by_the_next(
    tmp_path: Path, never_by_time: dict[str, Any]
) -> None:
    """A group rebalancing refuses commits for a moment (4 consumers joining at once did
    this): the consumer keeps going, and the next commit covers what it still owns."""
    consumer = ScriptedConsumer(
        [_records(0, range(0, 2)) + _records(1, range(0, 2)), _records(1, range(2, 4))],
        refuse=[RebalanceInProgressError("rebalancing")],
    )
    runner = _runner(tmp_path, consumer, commit_every_records=1, **never_by_time)
    runner.run_once()  # refused: kept
    assert consumer.commits == []
    consumer.owned = {P1}  # the rebalance gave P0 to another member
    runner.run_once()
    assert consumer.commits == [{P1: 4}]

"""BatchProcessor: a batch goes to the handlers whole; one bad event sends it back one by
one, leaving no trace of the failed attempt. On a real SQLite database."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from sqlalchemy import Column, MetaData, String, Table, func, insert, select
from sqlalchemy.orm import Session

from shared.db import make_engine, make_sessionmaker, outbox_table, processed_events_table
from shared.events import Envelope, InvalidEvent, encode, new_event
from shared.outbox import Outgoing
from shared.runner import BatchProcessor, InfrastructureError, RetryPolicy
from shared.topics import LEADS, TRAFFIC
from tests.helpers import FakeRecord

metadata = MetaData()
processed = processed_events_table(metadata)
outbox = outbox_table(metadata)
effects = Table("effects", metadata, Column("event_id", String(64), primary_key=True))


class Recorder:
    """A batch handler that writes one row per event, says what it was called with, and
    rejects events whose anonymous id is "bad"."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[list[str]] = []

    def __call__(self, events: Sequence[Envelope], session: Session) -> list[Outgoing]:
        self.calls.append([e.anonymous_id or "" for e in events])
        out = []
        for event in events:
            # Written before the check: a failed attempt must leave none of these behind.
            session.execute(insert(effects).values(event_id=event.event_id))
            if event.anonymous_id == "bad":
                raise InvalidEvent("bad by design")
            out.append(Outgoing(LEADS, self.name, event))
        return out


@pytest.fixture
def processor_parts(tmp_path: Path) -> tuple[BatchProcessor, Recorder, Recorder, Session]:
    engine = make_engine(f"sqlite:///{tmp_path / 'runner.db'}")
    metadata.create_all(engine)
    traffic, leads = Recorder("traffic"), Recorder("leads")
    processor = BatchProcessor(
        consumer_name="test",
        sessions=make_sessionmaker(engine),
        handlers={TRAFFIC: traffic, LEADS: leads},
        processed_table=processed,
        outbox_table=outbox,
        validate_outgoing=False,
    )
    return processor, traffic, leads, make_sessionmaker(engine)()


def _records(*items: tuple[str, str]) -> list[FakeRecord]:
    records = []
    for offset, (topic, anon) in enumerate(items):
        event_type = "page" if topic == TRAFFIC else "lead.scored"
        payload = (
            {"properties": {}}
            if topic == TRAFFIC
            else {
                "lead": {"lead_id": "l", "stage": "lead", "score": 1, "anonymous_ids": []},
                "delta": 1,
                "points": [],
            }
        )
        event = new_event(event_type, payload, source="t", anonymous_id=anon)
        records.append(FakeRecord(topic, 0, offset, b"k", encode(event)))
    return records


def test_runs_of_one_topic_go_to_their_handler_in_one_call(processor_parts) -> None:
    processor, traffic, leads, _ = processor_parts
    result = processor.process(
        _records((TRAFFIC, "a"), (TRAFFIC, "b"), (LEADS, "c"), (TRAFFIC, "d"))
    )
    assert traffic.calls == [["a", "b"], ["d"]]
    assert leads.calls == [["c"]]
    assert result.applied == 4
    assert [o.envelope.anonymous_id for o in result.outgoing] == ["a", "b", "c", "d"]


def test_one_bad_event_is_found_alone_and_the_failed_attempt_leaves_nothing(
    processor_parts,
) -> None:
    processor, traffic, _, session = processor_parts
    result = processor.process(_records((TRAFFIC, "a"), (TRAFFIC, "bad"), (TRAFFIC, "c")))
    assert traffic.calls == [["a", "bad", "c"], ["a"], ["bad"], ["c"]]
    assert result.applied == 2
    assert [(d.offset, d.reason) for d in result.dead_letters] == [(1, "bad by design")]
    assert [o.envelope.anonymous_id for o in result.outgoing] == ["a", "c"]
    assert session.scalar(select(func.count()).select_from(effects)) == 2
    assert session.scalar(select(func.count()).select_from(processed)) == 2
    assert session.scalar(select(func.count()).select_from(outbox)) == 2


def test_an_error_with_the_infrastructure_down_rolls_everything_back(processor_parts) -> None:
    processor, traffic, _, session = processor_parts

    def broken(events: Sequence[Envelope], session: Session) -> list[Outgoing]:
        traffic(events, session)
        raise RuntimeError("database gone")

    def infrastructure_down(session: Session) -> None:
        raise InfrastructureError("no database")

    processor.handlers[TRAFFIC] = broken
    processor.check_infrastructure = infrastructure_down
    with pytest.raises(InfrastructureError):
        processor.process(_records((TRAFFIC, "a"), (TRAFFIC, "b")))
    assert traffic.calls == [["a", "b"]]  # not retried one by one: not the data's fault
    assert session.scalar(select(func.count()).select_from(effects)) == 0
    assert session.scalar(select(func.count()).select_from(processed)) == 0


def test_any_exception_of_one_message_dead_letters_it_after_retries(processor_parts) -> None:
    """With the database answering, an exception of any type that one message raises
    again and again is that message's fault: it is retried alone, then dead-lettered with
    the exception's class and message; the others are applied."""
    processor, traffic, _, session = processor_parts
    processor.retry = RetryPolicy(attempts=3, backoff_s=0.001)

    def overflowing(events: Sequence[Envelope], session: Session) -> list[Outgoing]:
        out = traffic(events, session)
        if any(e.anonymous_id == "year-1" for e in events):
            raise OverflowError("date value out of range")
        return out

    processor.handlers[TRAFFIC] = overflowing
    result = processor.process(_records((TRAFFIC, "a"), (TRAFFIC, "year-1"), (TRAFFIC, "c")))
    # The batch, then each alone: the bad one three times (retried, then given up).
    assert traffic.calls == [["a", "year-1", "c"], ["a"], ["year-1"], ["year-1"], ["year-1"], ["c"]]
    [letter] = result.dead_letters
    assert (letter.offset, letter.kind) == (1, "handler_error")
    assert letter.reason == "OverflowError: date value out of range"
    assert result.applied == 2
    assert session.scalar(select(func.count()).select_from(effects)) == 2
    assert session.scalar(select(func.count()).select_from(processed)) == 2


def test_a_message_that_fails_once_is_retried_and_applied(processor_parts) -> None:
    processor, traffic, _, session = processor_parts
    processor.retry = RetryPolicy(attempts=3, backoff_s=0.001)
    failures = {"b": 2}

    def flaky(events: Sequence[Envelope], session: Session) -> list[Outgoing]:
        out = traffic(events, session)
        for e in events:
            if failures.get(e.anonymous_id or "", 0):
                failures[e.anonymous_id or ""] -= 1
                raise TimeoutError("lock wait")
        return out

    processor.handlers[TRAFFIC] = flaky
    result = processor.process(_records((TRAFFIC, "a"), (TRAFFIC, "b")))
    assert (result.applied, result.dead_letters) == (2, [])
    assert session.scalar(select(func.count()).select_from(processed)) == 2

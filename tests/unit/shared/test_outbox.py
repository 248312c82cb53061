"""The outbox: how many rows an enqueue added is exact on both databases (intake answers
a batch with it), duplicates by event id are ignored."""

from __future__ import annotations

from sqlalchemy import MetaData, func, insert, select

from shared.db import make_engine, outbox_table
from shared.deadletter import DeadLetter
from shared.events import new_event
from shared.outbox import Outgoing, dead_letter_row, enqueue


def test_enqueue_counts_new_rows_exactly(database_url: str) -> None:
    metadata = MetaData()
    table = outbox_table(metadata, "test_outbox")
    engine = make_engine(database_url)
    metadata.create_all(engine)
    events = [
        Outgoing("t", str(i), new_event("page", {}, source="w", event_id=f"e{i}", anonymous_id="a"))
        for i in range(300)
    ]
    with engine.begin() as conn:
        assert enqueue(conn, table, events[:120]) == 120
    with engine.begin() as conn:
        # 120 seen before, 180 new: a many-row INSERT's rowcount says otherwise on PG.
        assert enqueue(conn, table, events) == 180
        assert enqueue(conn, table, events) == 0
        assert conn.scalar(select(func.count()).select_from(table)) == 300


def test_rows_without_headers_store_null_and_headers_round_trip(database_url: str) -> None:
    metadata = MetaData()
    table = outbox_table(metadata, "test_outbox")
    engine = make_engine(database_url)
    metadata.create_all(engine)
    letter = DeadLetter("funnel.traffic", 0, 7, b"k", b"{", "lead-scoring", "bad_json", "no")
    with engine.begin() as conn:
        enqueue(conn, table, [Outgoing("t", "k", new_event("page", {}, source="w", event_id="e1"))])
        row = dead_letter_row(letter, "dl-1")
        conn.execute(insert(table), [row])
    with engine.connect() as conn:
        # Most rows carry no headers: SQL NULL, not the JSON text ``null`` per row.
        assert conn.scalar(select(func.count()).where(table.c.headers.is_(None))) == 1
        stored = conn.scalar(select(table.c.headers).where(table.c.event_id == "dl-1"))
    assert stored == row["headers"] and stored["dlq.kind"] == "bad_json"
    engine.dispose()

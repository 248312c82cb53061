"""The outbox: how many rows an enqueue added is exact on both databases (intake answers
a batch with it), duplicates by event id are ignored."""

from __future__ import annotations

from sqlalchemy import MetaData, func, select

from shared.db import make_engine, outbox_table
from shared.events import new_event
from shared.outbox import Outgoing, enqueue


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

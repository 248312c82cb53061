"""JSON log lines carry the request id (the client's X-Request-ID, echoed) and, in a
consumer, the id of the event being applied or dead-lettered."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.traffic_intake.app import create_app, init_db
from services.traffic_intake.config import IntakeConfig
from services.traffic_intake.state import STATE
from shared.logs import configure_logging, log_context
from shared.runner import BatchProcessor
from tests.helpers import FakeRecord


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    kept, level = root.handlers[:], root.level
    configure_logging("INFO", json_format=True)
    stream = io.StringIO()
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    yield stream
    root.handlers[:], root.level = kept, level


def records(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_a_log_line_in_a_request_names_the_request(lines: io.StringIO, tmp_path: Path) -> None:
    app = create_app(IntakeConfig(f"sqlite:///{tmp_path / 'i.db'}", ("k",)))
    init_db(app.extensions[STATE].engine)

    @app.get("/_log-something")
    def something() -> dict:
        logging.getLogger("funnel.test").warning("inside", extra={"rows": 3})
        return {}

    client = app.test_client()
    answer = client.get("/_log-something", headers={"X-Request-ID": "req-42"})
    assert answer.headers["X-Request-ID"] == "req-42"
    made_up = client.get("/_log-something", headers={"X-Request-ID": "not ok!"})
    assert made_up.headers["X-Request-ID"] != "not ok!"
    first, second = [r for r in records(lines) if r["logger"] == "funnel.test"]
    assert first["request_id"] == "req-42" and first["rows"] == 3
    assert first["message"] == "inside" and first["level"] == "WARNING"
    assert second["request_id"] == made_up.headers["X-Request-ID"]


def test_a_dead_letter_line_names_the_event(lines: io.StringIO, tmp_path: Path) -> None:
    from services.traffic_intake.models import privacy_outbox, processed_events
    from shared.db import make_engine, make_sessionmaker
    from shared.events import encode, new_event

    engine = make_engine(f"sqlite:///{tmp_path / 'c.db'}")
    init_db(engine)

    def handler(events: list, session: object) -> list:
        if any(e.payload.get("event") == "boom" for e in events):
            raise ValueError("cannot apply this one")
        return []

    processor = BatchProcessor(
        consumer_name="test",
        sessions=make_sessionmaker(engine),
        handlers={"funnel.traffic": handler},
        processed_table=processed_events,
        outbox_table=privacy_outbox,
    )
    good = new_event("track", {"event": "fine"}, source="w", anonymous_id="a")
    bad = new_event("track", {"event": "boom"}, source="w", anonymous_id="b")
    result = processor.process(
        [FakeRecord("funnel.traffic", 0, i, b"k", encode(e)) for i, e in enumerate([good, bad])]
    )
    assert len(result.dead_letters) == 1
    dead = [r for r in records(lines) if r["message"].startswith("dead letter")]
    assert [r["event_id"] for r in dead] == [bad.event_id]
    with log_context(event_id="e-9"):
        logging.getLogger("funnel.test").info("applying")
    assert records(lines)[-1]["event_id"] == "e-9"

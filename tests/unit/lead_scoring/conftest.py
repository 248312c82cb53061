from __future__ import annotations

from collections.abc import Sequence

import pytest
from flask import Flask

from services.lead_scoring.app import create_app, init_db
from services.lead_scoring.config import ScoringConfig
from services.lead_scoring.consumer import handlers
from services.lead_scoring.models import outbox, processed_events
from shared.config import Tokens
from shared.events import Envelope, encode
from shared.runner import BatchProcessor, BatchResult
from shared.topics import TRAFFIC
from tests.helpers import FakeRecord

TOKENS = Tokens(sales="sales-t", marketing="marketing-t", admin="admin-t")


@pytest.fixture
def scoring_app(database_url: str) -> Flask:
    app = create_app(ScoringConfig(database_url=database_url, tokens=TOKENS))
    init_db(app.extensions["lead_scoring"].engine)
    return app


class Feeder:
    """Feeds envelopes through the real BatchProcessor, as the consumer would."""

    def __init__(self, app: Flask) -> None:
        state = app.extensions["lead_scoring"]
        self.processor = BatchProcessor(
            consumer_name="lead-scoring",
            sessions=state.sessions,
            handlers=handlers(state.config),
            processed_table=processed_events,
            outbox_table=outbox,
        )
        self.offset = 0

    def __call__(self, *events: Envelope | bytes) -> BatchResult:
        records = []
        for e in events:
            value = e if isinstance(e, bytes) else encode(e)
            records.append(FakeRecord(TRAFFIC, 0, self.offset, b"k", value))
            self.offset += 1
        return self.processor.process(records)


@pytest.fixture
def feed(scoring_app: Flask) -> Feeder:
    return Feeder(scoring_app)


def types(result: BatchResult) -> Sequence[str]:
    return [o.envelope.type for o in result.outgoing]

from __future__ import annotations

from collections.abc import Sequence

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from services.lead_scoring.app import create_app, init_db
from services.lead_scoring.config import ScoringConfig
from services.lead_scoring.consumer import handlers
from services.lead_scoring.model.scoring import ScoringModel
from services.lead_scoring.models import Lead, outbox, processed_events
from services.lead_scoring.rulesets.documents import document_from_model
from services.lead_scoring.state import STATE as SCORING_STATE
from shared.config import Tokens
from shared.events import Envelope, decode, encode, new_event
from shared.runner import BatchProcessor, BatchResult
from shared.topics import TRAFFIC
from tests.helpers import FakeRecord

TOKENS = Tokens(sales="sales-t", marketing="marketing-t", admin="admin-t")
SALES = {"Authorization": "Bearer sales-t"}
ADMIN = {"Authorization": "Bearer admin-t"}


@pytest.fixture
def scoring_app(database_url: str) -> Flask:
    app = create_app(ScoringConfig(database_url=database_url, tokens=TOKENS))
    init_db(app.extensions[SCORING_STATE].engine)
    return app


class Feeder:
    """Feeds envelopes through the real BatchProcessor, as the consumer would."""

    def __init__(self, app: Flask) -> None:
        state = app.extensions[SCORING_STATE]
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


def add_rep(client: FlaskClient, name: str, **extra) -> dict:
    response = client.post(
        "/admin/reps", headers=ADMIN, json={"name": name, "email": f"{name}@corp.example", **extra}
    )
    assert response.status_code == 201, response.json
    return response.json


def make_mql(feed: Feeder, user: str, **traits) -> str:
    feed(
        new_event(
            "identify", {"traits": {"email": f"{user}@x.co", **traits}}, source="w", user_id=user
        )
    )
    result = feed(new_event("track", {"event": "Form Submitted"}, source="w", user_id=user))
    return result.outgoing[0].envelope.payload["lead"]["lead_id"]


def lead(app: Flask, lead_id: str) -> Lead:
    with app.extensions[SCORING_STATE].sessions() as s:
        found = s.get(Lead, lead_id)
        assert found is not None
        return found


def queued(app: Flask, event_type: str) -> list[dict]:
    with app.extensions[SCORING_STATE].engine.connect() as conn:
        rows = conn.execute(select(outbox.c.value)).scalars().all()
    return [e.payload for e in map(decode, rows) if e.type == event_type]


def issue_token(client: FlaskClient, rep_id: int) -> str:
    response = client.post(f"/admin/reps/{rep_id}/token", headers=ADMIN)
    assert response.status_code == 201, response.json
    assert response.json["rep_id"] == rep_id
    return response.json["token"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def default_rules() -> dict:
    """The built-in rule set as a document, to edit and PUT."""
    return document_from_model(ScoringModel())


def seed_three_people(feed: Feeder) -> None:
    """keen (a form, 2 pages), browser (30 pages), quiet (1 page), each identified."""
    for user, forms, pages in (("keen", 1, 2), ("browser", 0, 30), ("quiet", 0, 1)):
        feed(new_event("identify", {"traits": {"email": f"{user}@x.co"}}, source="w", user_id=user))
        for _ in range(pages):
            feed(new_event("page", {"properties": {"path": "/"}}, source="w", user_id=user))
        for _ in range(forms):
            feed(new_event("track", {"event": "Form Submitted"}, source="w", user_id=user))


def scores(app: Flask) -> dict[str, tuple[int, str, int]]:
    """email → (score, stage, rules version) of every lead."""
    with app.extensions[SCORING_STATE].sessions() as s:
        return {x.email: (x.score, x.stage, x.rules_version) for x in s.scalars(select(Lead))}

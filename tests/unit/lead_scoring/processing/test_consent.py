"""Consent decisions other services announce (an unsubscribe in a campaign e-mail) join
the person's history in lead-scoring; lead-scoring's own announcements are not kept
twice."""

from __future__ import annotations

from flask import Flask
from sqlalchemy import select

from services.lead_scoring.consumer import handlers
from services.lead_scoring.models import Lead, LeadConsent, outbox, processed_events
from services.lead_scoring.state import STATE as SCORING_STATE
from shared.db import utcnow
from shared.events import encode, new_event
from shared.runner import BatchProcessor
from shared.topics import LEAD_SCORING, MEMBER_RETARGETING, PRIVACY
from tests.helpers import FakeRecord
from tests.unit.lead_scoring.conftest import Feeder


def announce(app: Flask, lead_id: str, source: str, offset: int) -> None:
    state = app.extensions[SCORING_STATE]
    processor = BatchProcessor(
        consumer_name="lead-scoring",
        sessions=state.sessions,
        handlers=handlers(state.config),
        processed_table=processed_events,
        outbox_table=outbox,
    )
    event = new_event(
        "consent.changed",
        {
            "lead_id": lead_id,
            "purpose": "marketing",
            "granted": False,
            "decided_at": utcnow(),
            "source": "unsubscribe",
            "event_id": f"unsub-{offset}",
        },
        source=source,
    )
    result = processor.process([FakeRecord(PRIVACY, 0, offset, b"k", encode(event))])
    assert result.dead_letters == []


def test_an_unsubscribe_announced_by_retargeting_joins_the_lead_history(
    scoring_app: Flask, feed: Feeder
) -> None:
    feed(new_event("identify", {"traits": {"email": "ada@example.com"}}, source="w", user_id="u1"))
    sessions = scoring_app.extensions[SCORING_STATE].sessions
    with sessions() as session:
        lead_id = session.scalars(select(Lead.id)).one()
    announce(scoring_app, lead_id, MEMBER_RETARGETING, 0)
    announce(scoring_app, lead_id, LEAD_SCORING, 1)  # its own: already in the history
    announce(scoring_app, "no-such-lead", MEMBER_RETARGETING, 2)
    with sessions() as session:
        rows = session.execute(
            select(
                LeadConsent.lead_id, LeadConsent.purpose, LeadConsent.granted, LeadConsent.source
            )
        ).all()
    assert rows == [(lead_id, "marketing", False, "unsubscribe")]

"""The privacy topic's handler in lead-scoring's consumer: erase or export this
service's part of a request, and keep every service's answers to the requests started
here. Consent changes are lead-scoring's own announcements: nothing to do."""

from __future__ import annotations

from sqlalchemy.orm import Session

from services.lead_scoring.privacy import access, erasure
from services.lead_scoring.privacy.requests import record_answer
from shared.events import Envelope
from shared.outbox import Outgoing


def handle_privacy(event: Envelope, session: Session) -> list[Outgoing]:
    if event.type == "privacy.erasure_requested":
        return [erasure.erase(session, event)]
    if event.type == "privacy.access_requested":
        return [access.export(session, event)]
    if event.type in ("privacy.erasure_completed", "privacy.access_part"):
        record_answer(session, event)
    return []

"""The privacy topic's handler in lead-scoring's consumer: erase or export this
service's part of a request, and keep every service's answers to the requests started
here. A consent change announced by another service (an unsubscribe link in a campaign
e-mail) joins the person's consent history; lead-scoring's own announcements are already
in it."""

from __future__ import annotations

from sqlalchemy.orm import Session

from services.lead_scoring.privacy import access, erasure
from services.lead_scoring.privacy.requests import record_answer
from services.lead_scoring.processing.consent import record_announced
from shared.events import Envelope
from shared.outbox import Outgoing
from shared.topics import LEAD_SCORING


def handle_privacy(event: Envelope, session: Session) -> list[Outgoing]:
    if event.type == "privacy.erasure_requested":
        return [erasure.erase(session, event)]
    if event.type == "privacy.access_requested":
        return [access.export(session, event)]
    if event.type in ("privacy.erasure_completed", "privacy.access_part"):
        record_answer(session, event)
    if event.type == "consent.changed" and event.source != LEAD_SCORING:
        record_announced(session, event)
    return []

"""What lead-scoring tells the rest of the funnel: lead snapshots and ``lead.*`` events.

Shared by the event handler, the sales API and the SLA timer so every lead event carries
the same snapshot.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from services.lead_scoring.models import Lead, outbox
from services.lead_scoring.processing.store import LeadStore
from shared.deadletter import DeadLetter
from shared.events import new_event
from shared.identity import ANONYMOUS_ID
from shared.outbox import Outgoing, dead_letter_row
from shared.topics import LEAD_SCORING, LEADS


def snapshot(
    store: LeadStore, lead: Lead, identities: list[tuple[str, str]] | None = None
) -> dict[str, Any]:
    """The lead as events describe it, as a new version; pass ``identities`` when already
    loaded. Call it after the change it describes, with the lead locked (every writer
    holds the lead's row lock), so versions follow the order of changes."""
    if identities is None:
        identities = store.identities_of(lead.id)
    lead.version = (lead.version or 0) + 1
    return {
        "version": lead.version,
        "lead_id": lead.id,
        "stage": lead.stage,
        "score": lead.score,
        "email": lead.email,
        "user_id": lead.user_id,
        "anonymous_ids": [v for k, v in identities if k == ANONYMOUS_ID],
        "traits": dict(lead.traits),
        "intent": dict(lead.intent or {}),
        "owner_id": lead.owner_id,
    }


def derived_event_id(cause_id: str, kind: str) -> str:
    """Deterministic: reprocessing the same cause yields the same id, which consumers
    then deduplicate."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"funnel:{cause_id}:{kind}").hex


def lead_event(
    event_type: str,
    payload: dict[str, Any],
    lead: Lead,
    *,
    event_id: str,
    occurred_at: datetime,
) -> Outgoing:
    anonymous = payload["lead"]["anonymous_ids"]
    envelope = new_event(
        event_type,
        payload,
        source=LEAD_SCORING,
        event_id=event_id,
        occurred_at=occurred_at,
        user_id=lead.user_id,
        anonymous_id=anonymous[0] if anonymous else None,
    )
    return Outgoing(LEADS, lead.id, envelope)


def enqueue_dead_letter(session: Session, letter: DeadLetter) -> None:
    """Queue a dead letter through lead-scoring's outbox, in the caller's transaction."""
    session.execute(insert(outbox), [dead_letter_row(letter, f"dlq-{uuid.uuid4().hex}")])

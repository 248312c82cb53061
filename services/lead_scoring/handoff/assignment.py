"""Assigning a new MQL to a rep (:mod:`.routing` decides who): once, never reassigned.

Runs in the consumer's batch transaction; returns the ``lead.assigned`` event to publish.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.lead_scoring.handoff.routing import Candidate, choose_rep
from services.lead_scoring.models import Rep
from services.lead_scoring.processing.lead_events import derived_event_id, lead_event, snapshot
from services.lead_scoring.processing.lead_rows import LeadState
from services.lead_scoring.processing.store import LeadStore
from shared.outbox import Outgoing


def assign_if_unowned(
    session: Session, store: LeadStore, lead: LeadState, *, cause_id: str, now: datetime
) -> Outgoing | None:
    """Route an MQL without owner; never reassigns a lead that has one."""
    if lead.owner_id is not None:
        return None
    reps = [
        Candidate(
            r.id, r.name, r.available, tuple(r.countries), tuple(r.industries), r.last_assigned_at
        )
        for r in session.scalars(select(Rep).where(Rep.available.is_(True)))
    ]
    choice = choose_rep(lead.traits, lead.account_traits, reps)
    if choice is None:
        return None
    lead.owner_id, lead.assigned_at = choice.rep_id, now
    rep = session.get(Rep, choice.rep_id)
    assert rep is not None
    rep.last_assigned_at = now
    session.flush()
    return lead_event(
        "lead.assigned",
        {
            "lead": snapshot(store, lead),
            "owner_id": rep.id,
            "owner_name": rep.name,
            "reason": choice.reason,
        },
        lead,
        event_id=derived_event_id(cause_id, "assigned"),
        occurred_at=now,
    )

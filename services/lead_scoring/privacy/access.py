"""lead-scoring's part of an access export (the consumer applies
``privacy.access_requested``): the person's leads with their profile, identifiers and
where each came from, events, points, stages, merges, conflicts and every consent
decision — newest first, each list at most ``MAX_ACCESS_ITEMS`` (cut lists are named)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from services.lead_scoring.models import (
    Identity,
    IdentityConflict,
    Lead,
    LeadConsent,
    LeadEvent,
    LeadMerge,
    ScoreEntry,
    StageChange,
)
from services.lead_scoring.privacy.erasure import leads_of
from shared.events import Envelope
from shared.outbox import Outgoing
from shared.privacy import MAX_ACCESS_ITEMS, access_part, requested_identifiers
from shared.topics import LEAD_SCORING


def _rows(session: Session, stmt: Any, name: str, truncated: list[str]) -> list[dict[str, Any]]:
    rows = list(session.scalars(stmt.limit(MAX_ACCESS_ITEMS + 1)))
    if len(rows) > MAX_ACCESS_ITEMS:
        truncated.append(name)
    return [_plain(r) for r in rows[:MAX_ACCESS_ITEMS]]


def _plain(row: Any) -> dict[str, Any]:
    return {c.key: getattr(row, c.key) for c in row.__table__.columns}


def export(session: Session, event: Envelope) -> Outgoing:
    identifiers = requested_identifiers(event)
    leads = leads_of(session, identifiers)
    truncated: list[str] = []
    data = {
        "leads": [_plain(lead) for lead in session.scalars(select(Lead).where(Lead.id.in_(leads)))],
        "identities": _rows(
            session, select(Identity).where(Identity.lead_id.in_(leads)), "identities", truncated
        ),
        "consents": _rows(
            session,
            select(LeadConsent)
            .where(LeadConsent.lead_id.in_(leads))
            .order_by(LeadConsent.decided_at.desc()),
            "consents",
            truncated,
        ),
        "events": _rows(
            session,
            select(LeadEvent)
            .where(LeadEvent.lead_id.in_(leads))
            .order_by(LeadEvent.occurred_at.desc()),
            "events",
            truncated,
        ),
        "points": _rows(
            session,
            select(ScoreEntry)
            .where(ScoreEntry.lead_id.in_(leads))
            .order_by(ScoreEntry.occurred_at.desc()),
            "points",
            truncated,
        ),
        "stage_changes": _rows(
            session,
            select(StageChange).where(StageChange.lead_id.in_(leads)),
            "stage_changes",
            truncated,
        ),
        "merges": _rows(
            session,
            select(LeadMerge).where(
                or_(LeadMerge.lead_id.in_(leads), LeadMerge.merged_lead_id.in_(leads))
            ),
            "merges",
            truncated,
        ),
        "identity_conflicts": _rows(
            session,
            select(IdentityConflict).where(
                or_(
                    IdentityConflict.lead_id.in_(leads),
                    IdentityConflict.other_lead_id.in_(leads),
                )
            ),
            "identity_conflicts",
            truncated,
        ),
    }
    return access_part(event.payload["request_id"], LEAD_SCORING, data, truncated)

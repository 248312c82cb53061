"""The read model of the sales side: what the API and the pages show of leads. One
place, so both show the same numbers (engagement, priority, overdue hours)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.lead_scoring.handoff.sla import overdue_hours, overdue_query
from services.lead_scoring.model.engagement import decayed, priority
from services.lead_scoring.model.fit import grade
from services.lead_scoring.model.scoring import ScoringModel
from services.lead_scoring.models import (
    Identity,
    IdentityConflict,
    Lead,
    LeadEvent,
    LeadMerge,
    ScoreEntry,
    StageChange,
)
from shared.db import utcnow
from shared.identity import ANONYMOUS_ID
from shared.limits import MAX_ANONYMOUS_IDS

HISTORY_PAGE_SIZE = 50
MERGE_FIELDS = (
    "id",
    "merged_lead_id",
    "reason",
    "merged_at",
    "event_id",
    "source",
    "split_at",
    "split_by",
    "split_reason",
)
CONFLICT_FIELDS = ("kind", "value", "other_lead_id", "reason", "moved", "event_id", "source", "at")
SORTS = {
    "priority": (Lead.fit_grade.asc(), Lead.engagement_raw.desc(), Lead.score.desc()),
    "-score": (Lead.score.desc(), Lead.updated_at.desc()),
    "score": (Lead.score.asc(), Lead.updated_at.desc()),
    "-updated_at": (Lead.updated_at.desc(),),
}


def summary(lead: Lead, half_life_days: float) -> dict[str, Any]:
    """A lead in a list: who, stage, score, and the priority sales sorts by."""
    engagement = decayed(lead.engagement_raw, utcnow(), half_life_days)
    return {
        "fit_grade": lead.fit_grade,
        "fit_score": lead.fit_score,
        "engagement": round(engagement, 1),
        "priority": priority(lead.fit_grade, engagement),
        "intent": dict(lead.intent),
        "id": lead.id,
        "stage": lead.stage,
        "score": lead.score,
        "email": lead.email,
        "user_id": lead.user_id,
        "name": lead.traits.get("name"),
        "company": lead.account_traits.get("name") or lead.traits.get("company"),
        "last_event_at": lead.last_event_at,
        "updated_at": lead.updated_at,
        "owner_id": lead.owner_id,
        "mql_at": lead.mql_at,
    }


def lead_detail(
    session: Session,
    lead_id: str,
    model: ScoringModel,
    page: int = 1,
    page_size: int = HISTORY_PAGE_SIZE,
) -> dict[str, Any] | None:
    """The full profile; a merged-away id resolves to the lead it was merged into. Points
    and events are paged (newest first): a lead's history grows with its traffic. Fit
    reasons are explained under ``model`` (the active rule set)."""
    lead = session.get(Lead, lead_id)
    hops = 0
    while lead is not None and lead.merged_into and hops < 10:
        lead, hops = session.get(Lead, lead.merged_into), hops + 1
    if lead is None:
        return None

    def newest_first(model: Any) -> list[Any]:
        return list(
            session.scalars(
                select(model)
                .where(model.lead_id == lead.id)
                .order_by(model.occurred_at.desc(), model.id.desc())
                .offset((page - 1) * page_size)
                .limit(page_size)
            )
        )

    events = newest_first(LeadEvent)
    entries = newest_first(ScoreEntry)
    by_event = {
        e.event_id: e
        for e in session.scalars(
            select(LeadEvent).where(
                LeadEvent.lead_id == lead.id,
                LeadEvent.event_id.in_({s.event_id for s in entries}),
            )
        )
    }

    def count(model: Any) -> int:
        return int(
            session.scalar(select(func.count()).select_from(model).where(model.lead_id == lead.id))
            or 0
        )

    return {
        **summary(lead, model.half_life_days),
        "anonymous_ids": sorted(
            session.scalars(
                select(Identity.value).where(
                    Identity.lead_id == lead.id, Identity.kind == ANONYMOUS_ID
                )
            )
        ),
        "traits": lead.traits,
        "account_id": lead.account_id,
        "account_traits": lead.account_traits,
        "created_at": lead.created_at,
        "fit_reasons": [
            {"label": label, "points": points}
            for label, points in grade(
                lead.traits, lead.account_traits, model.fit_criteria, model.grades
            ).reasons
        ],
        "history": {
            "page": page,
            "page_size": page_size,
            "points_total": count(ScoreEntry),
            "events_total": count(LeadEvent),
        },
        "score_explained": {
            "total": lead.score,
            "points": [
                {
                    "rule_id": s.rule_id,
                    "points": s.points,
                    "reason": s.reason,
                    "event_id": s.event_id,
                    "event_type": by_event[s.event_id].type if s.event_id in by_event else None,
                    "event_name": by_event[s.event_id].name if s.event_id in by_event else None,
                    "occurred_at": s.occurred_at,
                }
                for s in entries
            ],
        },
        "stage_history": [
            {
                "from_stage": c.from_stage,
                "to_stage": c.to_stage,
                "reason": c.reason,
                "reason_code": c.reason_code,
                "changed_by": c.changed_by,
                "changed_at": c.changed_at,
            }
            for c in session.scalars(
                select(StageChange)
                .where(StageChange.lead_id == lead.id)
                .order_by(StageChange.changed_at.desc(), StageChange.id.desc())
                .limit(HISTORY_PAGE_SIZE)
            )
        ][::-1],
        "recent_events": [
            {
                "event_id": e.event_id,
                "type": e.type,
                "name": e.name,
                "path": e.path,
                "occurred_at": e.occurred_at,
            }
            for e in events
        ],
        "merges": [
            {c: getattr(m, c) for c in MERGE_FIELDS}
            for m in session.scalars(
                select(LeadMerge)
                .where(LeadMerge.lead_id == lead.id)
                .order_by(LeadMerge.id.desc())
                .limit(HISTORY_PAGE_SIZE)
            )
        ],
        "identities": [
            {
                "kind": i.kind,
                "value": i.value,
                "linked_at": i.created_at,
                "event_id": i.event_id,
                "source": i.source,
            }
            for i in session.scalars(
                select(Identity)
                .where(Identity.lead_id == lead.id)
                .order_by(Identity.kind, Identity.created_at.desc(), Identity.value)
                .limit(MAX_ANONYMOUS_IDS + 20)
            )
        ],
        "conflicts": [
            {c: getattr(x, c) for c in CONFLICT_FIELDS}
            for x in session.scalars(
                select(IdentityConflict)
                .where(IdentityConflict.lead_id == lead.id)
                .order_by(IdentityConflict.id.desc())
                .limit(HISTORY_PAGE_SIZE)
            )
        ],
    }


def list_leads(session: Session, query: dict[str, Any], half_life_days: float) -> dict[str, Any]:
    """A page of live leads, filtered as :class:`.schemas.LeadQuery` says and sorted by
    one of :data:`SORTS` (``priority`` by default)."""
    stmt = select(Lead).where(Lead.merged_into.is_(None))
    if "stage" in query:
        stmt = stmt.where(Lead.stage == query["stage"])
    if "min_score" in query:
        stmt = stmt.where(Lead.score >= query["min_score"])
    if "fit_grade" in query:
        stmt = stmt.where(Lead.fit_grade == query["fit_grade"])
    if "owner_id" in query:
        stmt = stmt.where(Lead.owner_id == query["owner_id"])
    if query.get("unassigned"):
        stmt = stmt.where(Lead.owner_id.is_(None))
    total = session.scalar(select(func.count()).select_from(stmt.subquery()))
    page, size = query["page"], query["page_size"]
    leads = session.scalars(
        stmt.order_by(*SORTS[query["sort"]], Lead.id).offset((page - 1) * size).limit(size)
    ).all()
    items = [summary(x, half_life_days) for x in leads]
    return {"items": items, "total": total, "page": page, "page_size": size}


def overdue_list(
    session: Session, now: datetime, sla_hours: float, half_life_days: float
) -> list[dict[str, Any]]:
    """MQLs past the follow-up SLA, oldest first, each with how far past it (hours)."""
    return [
        {
            **summary(lead, half_life_days),
            "overdue_hours": round(overdue_hours(lead, now, sla_hours), 2),
        }
        for lead in session.scalars(overdue_query(now, sla_hours))
    ]

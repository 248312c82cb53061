"""The sales API: scored leads, filtered and explained. Bearer token of role ``sales``."""

from __future__ import annotations

from typing import Any

from flask import current_app
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import RAISE
from sqlalchemy import func, select

from services.lead_scoring.models import (
    Identity,
    Lead,
    LeadEvent,
    LeadMerge,
    ScoreEntry,
    StageChange,
)
from services.lead_scoring.schemas import LeadDetail, LeadPage, LeadQuery
from shared.http import fail, require_role

blp = Blueprint("leads", __name__, url_prefix="/leads", description="Scored leads for sales")

RECENT_EVENTS = 50
SORTS = {
    "-score": (Lead.score.desc(), Lead.updated_at.desc()),
    "score": (Lead.score.asc(), Lead.updated_at.desc()),
    "-updated_at": (Lead.updated_at.desc(),),
}


def _session() -> Any:
    return current_app.extensions["lead_scoring"].sessions()


def summary(lead: Lead) -> dict[str, Any]:
    return {
        "id": lead.id,
        "stage": lead.stage,
        "score": lead.score,
        "email": lead.email,
        "user_id": lead.user_id,
        "name": lead.traits.get("name"),
        "company": lead.account_traits.get("name") or lead.traits.get("company"),
        "last_event_at": lead.last_event_at,
        "updated_at": lead.updated_at,
    }


def lead_detail(session: Any, lead_id: str) -> dict[str, Any] | None:
    """The full profile; a merged-away id resolves to the lead it was merged into."""
    lead = session.get(Lead, lead_id)
    hops = 0
    while lead is not None and lead.merged_into and hops < 10:
        lead, hops = session.get(Lead, lead.merged_into), hops + 1
    if lead is None:
        return None
    events = session.scalars(
        select(LeadEvent)
        .where(LeadEvent.lead_id == lead.id)
        .order_by(LeadEvent.occurred_at.desc(), LeadEvent.id.desc())
        .limit(RECENT_EVENTS)
    ).all()
    by_event = {
        e.event_id: e
        for e in session.scalars(select(LeadEvent).where(LeadEvent.lead_id == lead.id))
    }
    entries = session.scalars(
        select(ScoreEntry)
        .where(ScoreEntry.lead_id == lead.id)
        .order_by(ScoreEntry.occurred_at, ScoreEntry.id)
    ).all()
    return {
        **summary(lead),
        "anonymous_ids": sorted(
            session.scalars(
                select(Identity.value).where(
                    Identity.lead_id == lead.id, Identity.kind == "anonymous_id"
                )
            )
        ),
        "traits": lead.traits,
        "account_id": lead.account_id,
        "account_traits": lead.account_traits,
        "created_at": lead.created_at,
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
                "changed_by": c.changed_by,
                "changed_at": c.changed_at,
            }
            for c in session.scalars(
                select(StageChange)
                .where(StageChange.lead_id == lead.id)
                .order_by(StageChange.changed_at, StageChange.id)
            )
        ],
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
            {"merged_lead_id": m.merged_lead_id, "reason": m.reason, "merged_at": m.merged_at}
            for m in session.scalars(select(LeadMerge).where(LeadMerge.lead_id == lead.id))
        ],
    }


def list_leads(session: Any, query: dict[str, Any]) -> dict[str, Any]:
    stmt = select(Lead).where(Lead.merged_into.is_(None))
    if "stage" in query:
        stmt = stmt.where(Lead.stage == query["stage"])
    if "min_score" in query:
        stmt = stmt.where(Lead.score >= query["min_score"])
    total = session.scalar(select(func.count()).select_from(stmt.subquery()))
    page, size = query["page"], query["page_size"]
    leads = session.scalars(
        stmt.order_by(*SORTS[query["sort"]], Lead.id).offset((page - 1) * size).limit(size)
    ).all()
    return {"items": [summary(x) for x in leads], "total": total, "page": page, "page_size": size}


@blp.route("")
class LeadsView(MethodView):
    @require_role("sales")
    @blp.arguments(LeadQuery, location="query", unknown=RAISE)
    @blp.response(200, LeadPage)
    @blp.doc(security=[{"bearer": []}])
    def get(self, query: dict[str, Any]) -> dict[str, Any]:
        """Leads by score (highest first), filtered by stage and minimum score, paginated."""
        with _session() as session:
            return list_leads(session, query)


@blp.route("/<string:lead_id>")
class LeadView(MethodView):
    @require_role("sales")
    @blp.response(200, LeadDetail)
    @blp.doc(security=[{"bearer": []}])
    def get(self, lead_id: str) -> dict[str, Any]:
        """One lead: profile, every point with its rule and event, stages, recent events."""
        with _session() as session:
            detail = lead_detail(session, lead_id)
        if detail is None:
            fail(404, f"no lead {lead_id!r}")
        return detail

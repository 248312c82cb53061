"""The sales API: scored leads, filtered and explained. Bearer token of role ``sales``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import current_app
from flask.views import MethodView
from marshmallow import RAISE
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.lead_scoring import rep_tokens
from services.lead_scoring.engagement import decayed, priority
from services.lead_scoring.fit import grade
from services.lead_scoring.handoff import (
    HandoffError,
    accept,
    actor_name,
    move,
    overdue_query,
    reject,
)
from services.lead_scoring.models import (
    Identity,
    Lead,
    LeadEvent,
    LeadMerge,
    Rep,
    RescoreJob,
    RuleSet,
    ScoreEntry,
    StageChange,
    outbox,
)
from services.lead_scoring.rulesets import document_from_settings
from services.lead_scoring.schemas import (
    AcceptIn,
    HistoryQuery,
    LeadDetail,
    LeadPage,
    LeadQuery,
    OverdueList,
    RejectIn,
    RepIn,
    RepList,
    RepOut,
    RepPatch,
    RepTokenOut,
    RescoreJobOut,
    RuleSetIn,
    RuleSetOut,
    StageMoveIn,
)
from shared.db import utcnow
from shared.http import Blueprint, current_principal, fail, require_role
from shared.outbox import Outgoing, enqueue

blp = Blueprint("leads", __name__, url_prefix="/leads", description="Scored leads for sales")

HISTORY_PAGE_SIZE = 50
SORTS = {
    "priority": (Lead.fit_grade.asc(), Lead.engagement_raw.desc(), Lead.score.desc()),
    "-score": (Lead.score.desc(), Lead.updated_at.desc()),
    "score": (Lead.score.asc(), Lead.updated_at.desc()),
    "-updated_at": (Lead.updated_at.desc(),),
}


def _session() -> Any:
    return current_app.extensions["lead_scoring"].sessions()


def summary(lead: Lead) -> dict[str, Any]:
    settings = current_app.extensions["lead_scoring"].settings
    engagement = decayed(lead.engagement_raw, utcnow(), settings.half_life_days)
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
    session: Any, lead_id: str, page: int = 1, page_size: int = HISTORY_PAGE_SIZE
) -> dict[str, Any] | None:
    """The full profile; a merged-away id resolves to the lead it was merged into. Points
    and events are paged (newest first): a lead's history grows with its traffic."""
    lead = session.get(Lead, lead_id)
    hops = 0
    while lead is not None and lead.merged_into and hops < 10:
        lead, hops = session.get(Lead, lead.merged_into), hops + 1
    if lead is None:
        return None
    _, active = current_app.extensions["lead_scoring"].active.current(session)
    offset = (page - 1) * page_size
    events = session.scalars(
        select(LeadEvent)
        .where(LeadEvent.lead_id == lead.id)
        .order_by(LeadEvent.occurred_at.desc(), LeadEvent.id.desc())
        .offset(offset)
        .limit(page_size)
    ).all()
    entries = session.scalars(
        select(ScoreEntry)
        .where(ScoreEntry.lead_id == lead.id)
        .order_by(ScoreEntry.occurred_at.desc(), ScoreEntry.id.desc())
        .offset(offset)
        .limit(page_size)
    ).all()
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
        "fit_reasons": [
            {"label": label, "points": points}
            for label, points in grade(
                lead.traits, lead.account_traits, active.fit_criteria, active.grades
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
            {"merged_lead_id": m.merged_lead_id, "reason": m.reason, "merged_at": m.merged_at}
            for m in session.scalars(
                select(LeadMerge)
                .where(LeadMerge.lead_id == lead.id)
                .order_by(LeadMerge.id.desc())
                .limit(HISTORY_PAGE_SIZE)
            )
        ],
    }


def list_leads(session: Any, query: dict[str, Any]) -> dict[str, Any]:
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
    @blp.arguments(HistoryQuery, location="query", unknown=RAISE)
    @blp.response(200, LeadDetail)
    @blp.doc(security=[{"bearer": []}])
    def get(self, query: dict[str, Any], lead_id: str) -> dict[str, Any]:
        """One lead: profile, its points (each with its rule and event) and events, newest
        first and paged (``page``, ``page_size``), stages and merges."""
        with _session() as session:
            detail = lead_detail(session, lead_id, query["page"], query["page_size"])
        if detail is None:
            fail(404, f"no lead {lead_id!r}")
        return detail


def _act(lead_id: str, action: Callable[[Session, str], list[Outgoing]]) -> dict[str, Any]:
    """Run a sales action and queue its events in one transaction; answer the lead."""
    state = current_app.extensions["lead_scoring"]
    try:
        with state.sessions.begin() as session:
            enqueue(session, outbox, action(session, lead_id))
    except HandoffError as exc:
        fail(exc.status, exc.message)
    with state.sessions() as session:
        detail = lead_detail(session, lead_id)
    assert detail is not None
    return detail


@blp.route("/overdue")
class OverdueView(MethodView):
    @require_role("sales")
    @blp.response(200, OverdueList)
    @blp.doc(security=[{"bearer": []}])
    def get(self) -> dict[str, Any]:
        """MQLs neither accepted nor rejected within the follow-up SLA, oldest first."""
        sla = current_app.extensions["lead_scoring"].config.sla_hours
        now = utcnow()
        with _session() as session:
            leads = session.scalars(overdue_query(now, sla)).all()
            items = [
                {
                    **summary(x),
                    "overdue_hours": round((now - x.mql_at).total_seconds() / 3600 - sla, 2),
                }
                for x in leads
            ]
        return {"items": items, "sla_hours": sla}


def _actor(session: Session, rep_id: int | None) -> str:
    """Who is acting: with a rep's own token, that rep (``rep_id`` may only repeat it);
    with the shared sales token, the rep named by ``rep_id`` or just "sales"."""
    caller = current_principal()
    if caller.person_id is None:
        return actor_name(session, rep_id)
    if rep_id is not None and rep_id != caller.person_id:
        fail(
            403,
            "a rep's own token acts only as that rep",
            errors={"rep_id": [f"must be {caller.person_id} or left out"]},
        )
    return actor_name(session, caller.person_id)


@blp.route("/<string:lead_id>/accept")
class AcceptView(MethodView):
    @require_role("sales")
    @blp.arguments(AcceptIn)
    @blp.response(200, LeadDetail)
    @blp.doc(security=[{"bearer": []}])
    def post(self, data: dict[str, Any], lead_id: str) -> dict[str, Any]:
        """Accept an MQL: it becomes an SQL. 409 unless the lead is an MQL."""
        return _act(
            lead_id,
            lambda session, lid: accept(
                session,
                lid,
                actor=_actor(session, data["rep_id"]),
                note=data["note"],
                now=utcnow(),
            ),
        )


@blp.route("/<string:lead_id>/reject")
class RejectView(MethodView):
    @require_role("sales")
    @blp.arguments(RejectIn)
    @blp.response(200, LeadDetail)
    @blp.doc(security=[{"bearer": []}])
    def post(self, data: dict[str, Any], lead_id: str) -> dict[str, Any]:
        """Reject an MQL or SQL with a reason code: recycled (nurture) or disqualified.
        The code is published with the stage change so marketing sees why leads bounce."""
        return _act(
            lead_id,
            lambda session, lid: reject(
                session,
                lid,
                data["reason_code"],
                actor=_actor(session, data["rep_id"]),
                note=data["note"],
                now=utcnow(),
            ),
        )


@blp.route("/<string:lead_id>/stage")
class StageView(MethodView):
    @require_role("sales")
    @blp.arguments(StageMoveIn)
    @blp.response(200, LeadDetail)
    @blp.doc(security=[{"bearer": []}])
    def post(self, data: dict[str, Any], lead_id: str) -> dict[str, Any]:
        """Move a lead to any stage, forwards or back, with a reason (e.g. SQL →
        opportunity). The only way a lead moves backwards besides a rejection."""
        return _act(
            lead_id,
            lambda session, lid: move(
                session,
                lid,
                data["to_stage"],
                data["reason"],
                actor=_actor(session, data["rep_id"]),
                now=utcnow(),
            ),
        )


reps_blp = Blueprint("reps", __name__, url_prefix="/admin/reps", description="Sales reps")


@reps_blp.route("")
class RepsView(MethodView):
    @require_role("admin", "sales")
    @reps_blp.response(200, RepList)
    @reps_blp.doc(security=[{"bearer": []}])
    def get(self) -> dict[str, Any]:
        """Every rep, with territory and availability."""
        with _session() as session:
            return {"items": list(session.scalars(select(Rep).order_by(Rep.id)))}

    @require_role("admin")
    @reps_blp.arguments(RepIn)
    @reps_blp.response(201, RepOut)
    @reps_blp.doc(security=[{"bearer": []}])
    def post(self, data: dict[str, Any]) -> Rep:
        """Add a rep; new MQLs in their territory are routed to them round robin."""
        try:
            with current_app.extensions["lead_scoring"].sessions.begin() as session:
                rep = Rep(**data)
                session.add(rep)
                session.flush()
                return rep
        except IntegrityError:
            fail(
                409,
                f"a rep with email {data['email']!r} exists",
                errors={"email": ["already taken"]},
            )


@reps_blp.route("/<id:rep_id>")
class RepView(MethodView):
    @require_role("admin")
    @reps_blp.arguments(RepPatch)
    @reps_blp.response(200, RepOut)
    @reps_blp.doc(security=[{"bearer": []}])
    def patch(self, data: dict[str, Any], rep_id: int) -> Rep:
        """Change availability (holidays) or territory. Owned leads keep their owner."""
        with current_app.extensions["lead_scoring"].sessions.begin() as session:
            rep = session.get(Rep, rep_id)
            if rep is None:
                fail(404, f"no rep {rep_id}")
            for key, value in data.items():
                setattr(rep, key, value)
            session.flush()
            return rep


@reps_blp.route("/<id:rep_id>/token")
class RepTokenView(MethodView):
    @require_role("admin")
    @reps_blp.response(201, RepTokenOut)
    @reps_blp.doc(security=[{"bearer": []}])
    def post(self, rep_id: int) -> dict[str, Any]:
        """Issue the rep's personal token (shown only in this answer), replacing any
        earlier one. With it the rep signs in to the pages and calls the API as
        themselves: their queue, and accept/reject recorded under their name."""
        with current_app.extensions["lead_scoring"].sessions.begin() as session:
            try:
                token = rep_tokens.issue(session, rep_id)
            except LookupError:
                fail(404, f"no rep {rep_id}")
        return {"rep_id": rep_id, "token": token}

    @require_role("admin")
    @reps_blp.response(204)
    @reps_blp.doc(security=[{"bearer": []}])
    def delete(self, rep_id: int) -> None:
        """Revoke the rep's token: API calls with it fail and page sessions end."""
        with current_app.extensions["lead_scoring"].sessions.begin() as session:
            if not rep_tokens.revoke(session, rep_id):
                fail(404, f"rep {rep_id} has no token")


rules_blp = Blueprint(
    "scoring-rules", __name__, url_prefix="/admin/scoring", description="Scoring rule sets"
)


def _job_out(job: RescoreJob) -> dict[str, Any]:
    progress = 1.0 if job.status == "done" else (job.done / job.total if job.total else 0.0)
    return {
        **{
            c: getattr(job, c)
            for c in (
                "id",
                "version",
                "total",
                "done",
                "failed",
                "status",
                "created_at",
                "finished_at",
            )
        },
        "progress": round(progress, 4),
    }


@rules_blp.route("/rules")
class RulesView(MethodView):
    @require_role("admin")
    @rules_blp.response(200, RuleSetOut)
    @rules_blp.doc(security=[{"bearer": []}])
    def get(self) -> dict[str, Any]:
        """The active rule set (version 0 is the built-in default)."""
        state = current_app.extensions["lead_scoring"]
        with state.sessions() as session:
            version, settings = state.active.current(session)
        return {"version": version, "document": document_from_settings(settings)}

    @require_role("admin")
    @rules_blp.arguments(RuleSetIn)
    @rules_blp.response(202, RescoreJobOut)
    @rules_blp.doc(security=[{"bearer": []}])
    def put(self, document: dict[str, Any]) -> dict[str, Any]:
        """Store a new version and start rescoring every lead from its history; follow
        the returned job for progress. New events use the new version at once."""
        note = document.pop("note", None)
        state = current_app.extensions["lead_scoring"]
        with state.sessions.begin() as session:
            version = (session.scalar(select(func.max(RuleSet.version))) or 0) + 1
            session.add(RuleSet(version=version, document=document, note=note))
            total = (
                session.scalar(
                    select(func.count()).select_from(Lead).where(Lead.merged_into.is_(None))
                )
                or 0
            )
            job = RescoreJob(
                version=version,
                total=total,
                done=0,
                failed=0,
                status="pending" if total else "done",
            )
            session.add(job)
            session.flush()
            out = _job_out(job)
        state.active.invalidate()
        return out


@rules_blp.route("/rescores/<id:job_id>")
class RescoreView(MethodView):
    @require_role("admin")
    @rules_blp.response(200, RescoreJobOut)
    @rules_blp.doc(security=[{"bearer": []}])
    def get(self, job_id: int) -> dict[str, Any]:
        """Progress of a rescore (done / total leads)."""
        with _session() as session:
            job = session.get(RescoreJob, job_id)
            if job is None:
                fail(404, f"no rescore job {job_id}")
            return _job_out(job)

"""The sales API on leads (bearer token of role ``sales``, or a rep's own token): the
list by priority, one lead explained, the overdue list, and accept / reject / move."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from marshmallow import RAISE
from sqlalchemy.orm import Session

from services.lead_scoring.handoff.actions import (
    Action,
    HandoffError,
    accept,
    actor_name,
    move,
    perform,
    reject,
)
from services.lead_scoring.state import state
from services.lead_scoring.web.queries import lead_detail, list_leads, overdue_list
from services.lead_scoring.web.schemas import (
    AcceptIn,
    HistoryQuery,
    LeadDetail,
    LeadPage,
    LeadQuery,
    OverdueList,
    RejectIn,
    StageMoveIn,
)
from shared.db import utcnow
from shared.http import Blueprint, current_principal, fail, require_role

blp = Blueprint("leads", __name__, url_prefix="/leads", description="Scored leads for sales")
SECURED: list[dict[str, list[str]]] = [{"bearer": []}]


def _detail(lead_id: str, page: int = 1, page_size: int = 50) -> dict[str, Any]:
    s = state()
    with s.sessions() as session:
        _, model = s.rule_sets.current(session)
        detail = lead_detail(session, lead_id, model, page, page_size)
    if detail is None:
        fail(404, f"no lead {lead_id!r}")
    return detail


@blp.route("")
class LeadsView(MethodView):
    @require_role("sales")
    @blp.arguments(LeadQuery, location="query", unknown=RAISE)
    @blp.response(200, LeadPage)
    @blp.doc(security=SECURED)
    def get(self, query: dict[str, Any]) -> dict[str, Any]:
        """Leads by priority (fit grade, then engagement now: A1 first) unless ``sort``
        says otherwise; filtered by stage, fit, owner and minimum score; paginated."""
        s = state()
        with s.sessions() as session:
            return list_leads(session, query, s.base_model.half_life_days)


@blp.route("/<string:lead_id>")
class LeadView(MethodView):
    @require_role("sales")
    @blp.arguments(HistoryQuery, location="query", unknown=RAISE)
    @blp.response(200, LeadDetail)
    @blp.doc(security=SECURED)
    def get(self, query: dict[str, Any], lead_id: str) -> dict[str, Any]:
        """One lead: profile, its points (each with its rule and event) and events, newest
        first and paged (``page``, ``page_size``), stages and merges."""
        return _detail(lead_id, query["page"], query["page_size"])


@blp.route("/overdue")
class OverdueView(MethodView):
    @require_role("sales")
    @blp.response(200, OverdueList)
    @blp.doc(security=SECURED)
    def get(self) -> dict[str, Any]:
        """MQLs neither accepted nor rejected within the follow-up SLA, oldest first."""
        s = state()
        sla = s.config.sla_hours
        with s.sessions() as session:
            items = overdue_list(session, utcnow(), sla, s.base_model.half_life_days)
        return {"items": items, "sla_hours": sla}


def _act(lead_id: str, action: Action) -> dict[str, Any]:
    """Run a sales action (its events queued in the same transaction); answer the lead."""
    try:
        perform(state().sessions, lead_id, action)
    except HandoffError as exc:
        fail(exc.status, exc.message)
    return _detail(lead_id)


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
    @blp.doc(security=SECURED)
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
    @blp.doc(security=SECURED)
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
    @blp.doc(security=SECURED)
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

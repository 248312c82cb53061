"""The sales API on leads (bearer token of role ``sales``, or a rep's own token): the
list by priority, one lead explained, the overdue list, and accept / reject / move."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask.views import MethodView
from marshmallow import RAISE
from sqlalchemy.orm import Session

from services.lead_scoring.handoff.actions import (
    HandoffError,
    accept,
    actor_name,
    move,
    perform,
    reject,
    shared_token_actor,
)
from services.lead_scoring.processing.split import SplitRequest, split
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
    SplitIn,
    StageMoveIn,
)
from shared.db import utcnow
from shared.http import Blueprint, current_principal, fail, or_404, require_role
from shared.outbox import Outgoing

blp = Blueprint("leads", __name__, url_prefix="/leads", description="Scored leads for sales")


def _detail(lead_id: str, page: int = 1, page_size: int = 50) -> dict[str, Any]:
    s = state()
    with s.sessions() as session:
        _, model = s.rule_sets.current(session)
        detail = or_404(
            lead_detail(session, lead_id, model, page, page_size), f"no lead {lead_id!r}"
        )
    return detail


@blp.route("")
class LeadsView(MethodView):
    @require_role("sales")
    @blp.arguments(LeadQuery, location="query", unknown=RAISE)
    @blp.response(200, LeadPage)
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
    def get(self, query: dict[str, Any], lead_id: str) -> dict[str, Any]:
        """One lead: profile, its points (each with its rule and event) and events, newest
        first and paged (``page``, ``page_size``), stages and merges."""
        return _detail(lead_id, query["page"], query["page_size"])


@blp.route("/overdue")
class OverdueView(MethodView):
    @require_role("sales")
    @blp.response(200, OverdueList)
    def get(self) -> dict[str, Any]:
        """MQLs neither accepted nor rejected within the follow-up SLA, oldest first."""
        s = state()
        sla = s.config.sla_hours
        with s.sessions() as session:
            items = overdue_list(session, utcnow(), sla, s.base_model.half_life_days)
        return {"items": items, "sla_hours": sla}


def _actor(session: Session, rep_id: int | None) -> str:
    """Who is acting: with a rep's own token, that rep (``rep_id`` may only repeat it);
    with the shared sales token, that token ("sales token for rep:…" when it works a
    rep's queue: never the rep themself); an admin as themself."""
    caller = current_principal()
    if caller.role != "sales":  # an admin: the shared token, or their own account
        if caller.person_id is None:
            return caller.name
        return f"{caller.role}:{caller.person_id}:{caller.name}"
    if caller.person_id is None:
        return shared_token_actor(session, rep_id)
    if rep_id is not None and rep_id != caller.person_id:
        fail(
            403,
            "a rep's own token acts only as that rep",
            errors={"rep_id": [f"must be {caller.person_id} or left out"]},
        )
    return actor_name(session, caller.person_id)


ActAs = Callable[[Session, str, str], list[Outgoing]]
"""A sales action given the acting person's name: session, lead id, actor in; events out."""


def _act(lead_id: str, rep_id: int | None, action: ActAs) -> dict[str, Any]:
    """Run a sales action as the caller (see :func:`_actor`), its events queued in the
    same transaction; answer the lead."""
    try:
        perform(
            state().sessions,
            lead_id,
            lambda session, lid: action(session, lid, _actor(session, rep_id)),
        )
    except HandoffError as exc:
        fail(exc.status, exc.message)
    return _detail(lead_id)


@blp.route("/<string:lead_id>/accept")
class AcceptView(MethodView):
    @require_role("sales")
    @blp.arguments(AcceptIn)
    @blp.response(200, LeadDetail)
    def post(self, data: dict[str, Any], lead_id: str) -> dict[str, Any]:
        """Accept an MQL: it becomes an SQL. 409 unless the lead is an MQL."""
        note = data["note"]
        return _act(
            lead_id,
            data["rep_id"],
            lambda session, lid, actor: accept(session, lid, actor=actor, note=note, now=utcnow()),
        )


@blp.route("/<string:lead_id>/reject")
class RejectView(MethodView):
    @require_role("sales")
    @blp.arguments(RejectIn)
    @blp.response(200, LeadDetail)
    def post(self, data: dict[str, Any], lead_id: str) -> dict[str, Any]:
        """Reject an MQL or SQL with a reason code: recycled (nurture) or disqualified.
        The code is published with the stage change so marketing sees why leads bounce."""
        code, note = data["reason_code"], data["note"]
        return _act(
            lead_id,
            data["rep_id"],
            lambda session, lid, actor: reject(
                session, lid, code, actor=actor, note=note, now=utcnow()
            ),
        )


@blp.route("/<string:lead_id>/stage")
class StageView(MethodView):
    @require_role("sales")
    @blp.arguments(StageMoveIn)
    @blp.response(200, LeadDetail)
    def post(self, data: dict[str, Any], lead_id: str) -> dict[str, Any]:
        """Move a lead to any stage, forwards or back, with a reason (e.g. SQL →
        opportunity). The only way a lead moves backwards besides a rejection."""
        to_stage, reason = data["to_stage"], data["reason"]
        return _act(
            lead_id,
            data["rep_id"],
            lambda session, lid, actor: move(
                session, lid, to_stage, reason, actor=actor, now=utcnow()
            ),
        )


@blp.route("/<string:lead_id>/split")
class SplitView(MethodView):
    @require_role("sales", "admin")
    @blp.arguments(SplitIn)
    @blp.response(200, LeadDetail)
    def post(self, data: dict[str, Any], lead_id: str) -> dict[str, Any]:
        """Undo a wrong merge (``merge_id``) or give one of the lead's identifiers a lead
        of its own (``identifier``), with a reason. Both leads are rebuilt from their own
        events; an event that named both people is set aside. Answers this lead; the other
        is named by ``split_lead`` in the published ``lead.split``."""
        request = SplitRequest(
            lead_id=lead_id,
            merge_id=data["merge_id"],
            identifier=(data["identifier"]["kind"], data["identifier"]["value"])
            if data["identifier"]
            else None,
        )
        return _act(
            lead_id,
            data["rep_id"],
            lambda session, _lid, actor: split_lead(session, request, actor, data["reason"]),
        )


def split_lead(session: Session, request: SplitRequest, actor: str, reason: str) -> list[Outgoing]:
    """A split as the signed-in person, under the newest rules."""
    s = state()
    _, identity_rules = s.identity_rules.current(session)
    return split(
        session,
        request,
        actor=actor,
        reason=reason,
        now=utcnow(),
        rule_sets=s.rule_sets,
        identity_rules=identity_rules,
    )

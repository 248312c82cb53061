"""The marketing API on campaigns (bearer token of role ``marketing``): create one over a
segment, run it (a background job, idempotent on a key), follow a run, read its report.

Starting a run needs an idempotency key from the client (``idempotency_key`` in the body
of ``POST …/runs``, the ``Idempotency-Key`` header of ``POST …/trigger``): a key made up
here would make every retry of a lost answer a second run. Keys are kept under the
``api:`` namespace, so they never meet the scheduler's (``schedule:``, ``event:``) or
the pages' (``page:``)."""

from __future__ import annotations

from typing import Any

from flask import request
from flask.views import MethodView
from marshmallow import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.member_retargeting.campaigns.reports import report
from services.member_retargeting.campaigns.runs import start
from services.member_retargeting.models import Campaign, CampaignRun, Segment
from services.member_retargeting.people.segments import stored_count
from services.member_retargeting.state import state
from services.member_retargeting.web.schemas import (
    MAX_KEY_LENGTH,
    CampaignIn,
    CampaignList,
    CampaignOut,
    ReportOut,
    RunIn,
    RunOut,
    TriggerOut,
)
from shared.db import utcnow
from shared.http import (
    Blueprint,
    current_principal,
    fail,
    flatten_field_errors,
    or_404,
    require_role,
)

blp = Blueprint("campaigns", __name__, description="Retargeting campaigns")


def run_out(run: CampaignRun) -> dict[str, Any]:
    progress = 1.0 if run.status == "done" else run.processed / max(run.audience_size, 1)
    return {
        "run_id": run.id,
        "trigger": run.trigger,
        "status": run.status,
        "error": run.error,
        "audience_size": run.audience_size,
        "processed": run.processed,
        "progress": round(progress, 4),
        "triggered_at": run.triggered_at,
        "finished_at": run.finished_at,
    }


RUNS_SHOWN = 50
API_KEYS = "api:"
KEY_HEADER = "Idempotency-Key"


def campaign_out(session: Session, campaign: Campaign) -> dict[str, Any]:
    newest = session.scalars(
        select(CampaignRun)
        .where(CampaignRun.campaign_id == campaign.id)
        .order_by(CampaignRun.id.desc())
        .limit(RUNS_SHOWN)
    ).all()
    runs = list(reversed(newest))  # the newest runs, oldest of them first
    return {
        **report(session, campaign),
        "id": campaign.id,
        "name": campaign.name,
        "segment": campaign.segment,
        "channel": campaign.channel,
        "kind": campaign.kind,
        "message": campaign.message,
        "schedule_at": campaign.schedule_at,
        "trigger": campaign.trigger,
        "created_at": campaign.created_at,
        "current_audience": stored_count(session, campaign.segment, utcnow()),
        "runs": [run_out(r) for r in runs],
    }


@blp.route("/campaigns")
class CampaignsView(MethodView):
    @require_role("marketing")
    @blp.response(200, CampaignList)
    def get(self) -> dict[str, Any]:
        """All campaigns, newest first, each with its report."""
        with state().sessions() as session:
            campaigns = session.scalars(select(Campaign).order_by(Campaign.id.desc())).all()
            return {"items": [campaign_out(session, c) for c in campaigns]}

    @require_role("marketing")
    @blp.arguments(CampaignIn)
    @blp.response(201, CampaignOut)
    def post(self, data: dict[str, Any]) -> dict[str, Any]:
        """Create a campaign over a segment (a rule, or a saved segment's rule copied
        in): sent now (run it), at ``schedule_at``, or on an event after a delay."""
        with state().sessions.begin() as session:
            segment_id = data.pop("segment_id")
            if segment_id is not None:
                saved = or_404(session.get(Segment, segment_id), f"no segment {segment_id}")
                data["segment"] = saved.rule
            campaign = Campaign(**data)
            session.add(campaign)
            session.flush()
            return campaign_out(session, campaign)


@blp.route("/campaigns/<id:campaign_id>")
class CampaignView(MethodView):
    @require_role("marketing")
    @blp.response(200, CampaignOut)
    def get(self, campaign_id: int) -> dict[str, Any]:
        """One campaign: who its segment matches now, its runs and its report."""
        with state().sessions() as session:
            campaign = or_404(session.get(Campaign, campaign_id), f"no campaign {campaign_id}")
            return campaign_out(session, campaign)


def run_now(campaign_id: int, key: str, requested_by: str) -> dict[str, Any]:
    """Start the campaign's run for ``key`` (or find the one it started): 404 for no
    such campaign. The audience is fixed now; the scheduler process sends."""
    with state().sessions.begin() as session:
        campaign = or_404(session.get(Campaign, campaign_id), f"no campaign {campaign_id}")
        run, created = start(
            session,
            campaign,
            key=key,
            trigger="manual",
            requested_by=requested_by,
            now=utcnow(),
        )
        return {
            "campaign_id": campaign_id,
            "run_id": run.id,
            "audience_size": run.audience_size,
            "status": run.status,
            "created": created,
        }


def _start(campaign_id: int, key: str) -> dict[str, Any]:
    return run_now(campaign_id, f"{API_KEYS}{key}", current_principal().name or "marketing")


@blp.route("/campaigns/<id:campaign_id>/runs")
class RunsView(MethodView):
    @require_role("marketing")
    @blp.arguments(RunIn)
    @blp.response(202, TriggerOut)
    def post(self, data: dict[str, Any], campaign_id: int) -> dict[str, Any]:
        """Run the campaign now: its audience is fixed at once; the scheduler process
        sends in chunks, exactly once per person. ``idempotency_key`` is required: the
        same key never starts a second run (a retry answers with the run it started)."""
        return _start(campaign_id, data["idempotency_key"])


@blp.route("/campaigns/<id:campaign_id>/trigger")
class TriggerView(MethodView):
    @require_role("marketing")
    @blp.doc(
        parameters=[
            {
                "in": "header",
                "name": KEY_HEADER,
                "required": True,
                "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH},
                "description": "one run per key: a retry with it starts nothing new",
            }
        ]
    )
    @blp.response(202, TriggerOut)
    def post(self, campaign_id: int) -> dict[str, Any]:
        """Run the campaign now. The ``Idempotency-Key`` header is required (the same as
        ``idempotency_key`` of ``…/runs``): the same key never starts a second run."""
        return _start(campaign_id, _header_key())


def _header_key() -> str:
    """The ``Idempotency-Key`` header as a key, or a 422 naming the header."""
    try:
        header = request.headers.get(KEY_HEADER)
        loaded = RunIn().load({} if header is None else {"idempotency_key": header})
    except ValidationError as exc:
        problems = flatten_field_errors(exc.messages).get("idempotency_key", ["invalid"])
        fail(422, f"a usable {KEY_HEADER} header is required", errors={KEY_HEADER: problems})
    return str(loaded["idempotency_key"])


@blp.route("/campaigns/<id:campaign_id>/report")
class ReportView(MethodView):
    @require_role("marketing")
    @blp.response(200, ReportOut)
    def get(self, campaign_id: int) -> dict[str, Any]:
        """Audience, dispatched, skipped by reason, conversions and revenue."""
        with state().sessions() as session:
            campaign = or_404(session.get(Campaign, campaign_id), f"no campaign {campaign_id}")
            return report(session, campaign)


@blp.route("/runs/<id:run_id>")
class RunView(MethodView):
    @require_role("marketing")
    @blp.response(200, RunOut)
    def get(self, run_id: int) -> dict[str, Any]:
        """A run's progress."""
        with state().sessions() as session:
            return run_out(or_404(session.get(CampaignRun, run_id), f"no run {run_id}"))

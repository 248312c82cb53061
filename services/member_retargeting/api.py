"""The marketing API: members, campaigns, triggers. Bearer token of role ``marketing``."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from flask.views import MethodView
from sqlalchemy import and_, func, or_, select

from services.member_retargeting.campaigns import trigger
from services.member_retargeting.models import (
    Campaign,
    CampaignRun,
    Contact,
    ContactIdentity,
    Dispatch,
    Order,
    outbox,
)
from services.member_retargeting.schemas import (
    CampaignIn,
    CampaignList,
    CampaignOut,
    MemberList,
    TriggerOut,
)
from services.member_retargeting.segments import audience_query
from services.member_retargeting.state import state
from shared.http import Blueprint, or_404, require_role
from shared.identity import ANONYMOUS_ID, USER_ID

blp = Blueprint("marketing", __name__, description="Members and retargeting campaigns")


def campaign_out(session: Any, campaign: Campaign) -> dict[str, Any]:
    audience = session.scalar(
        select(func.count()).select_from(
            audience_query(campaign.segment, campaign.channel).subquery()
        )
    )
    dispatched = session.scalar(
        select(func.count()).select_from(Dispatch).where(Dispatch.campaign_id == campaign.id)
    )
    # Sent outbox rows are pruned after the dedupe horizon, unsent ones never: a dispatch
    # is published unless its row is still waiting.
    waiting = session.scalar(
        select(func.count())
        .select_from(Dispatch)
        .join(outbox, outbox.c.event_id == Dispatch.event_id)
        .where(Dispatch.campaign_id == campaign.id, outbox.c.sent_at.is_(None))
    )
    published = (dispatched or 0) - (waiting or 0)
    runs = session.scalars(
        select(CampaignRun).where(CampaignRun.campaign_id == campaign.id).order_by(CampaignRun.id)
    ).all()
    return {
        "id": campaign.id,
        "name": campaign.name,
        "segment": campaign.segment,
        "channel": campaign.channel,
        "message": campaign.message,
        "created_at": campaign.created_at,
        "audience_size": audience,
        "dispatched_count": dispatched,
        "published_count": published,
        "runs": [
            {
                "run_id": r.id,
                "trigger": r.trigger,
                "audience_size": r.audience_size,
                "triggered_at": r.triggered_at,
            }
            for r in runs
        ],
    }


@blp.route("/campaigns")
class CampaignsView(MethodView):
    @require_role("marketing")
    @blp.response(200, CampaignList)
    def get(self) -> dict[str, Any]:
        """All campaigns, newest first."""
        with state().sessions() as session:
            campaigns = session.scalars(select(Campaign).order_by(Campaign.id.desc())).all()
            return {"items": [campaign_out(session, c) for c in campaigns]}

    @require_role("marketing")
    @blp.arguments(CampaignIn)
    @blp.response(201, CampaignOut)
    def post(self, data: dict[str, Any]) -> dict[str, Any]:
        """Create a campaign over a segment rule."""
        with state().sessions.begin() as session:
            campaign = Campaign(**data)
            session.add(campaign)
            session.flush()
            return campaign_out(session, campaign)


@blp.route("/campaigns/<id:campaign_id>")
class CampaignView(MethodView):
    @require_role("marketing")
    @blp.response(200, CampaignOut)
    def get(self, campaign_id: int) -> dict[str, Any]:
        """One campaign with its current audience size and dispatched counts."""
        with state().sessions() as session:
            campaign = or_404(session.get(Campaign, campaign_id), f"no campaign {campaign_id}")
            return campaign_out(session, campaign)


@blp.route("/campaigns/<id:campaign_id>/trigger")
class TriggerView(MethodView):
    @require_role("marketing")
    @blp.response(202, TriggerOut)
    def post(self, campaign_id: int) -> dict[str, Any]:
        """Run the campaign now: one dispatch per recipient, queued durably; the consumer
        process publishes them to the dispatch topic."""
        with state().sessions.begin() as session:
            campaign = or_404(session.get(Campaign, campaign_id), f"no campaign {campaign_id}")
            result = trigger(session, campaign, outbox, "manual")
        return {
            "campaign_id": campaign_id,
            "run_id": result.run_id,
            "audience_size": result.audience_size,
        }


@blp.route("/members")
class MembersView(MethodView):
    @require_role("marketing")
    @blp.response(200, MemberList)
    def get(self) -> dict[str, Any]:
        """Members with their order count and revenue (lifetime value so far)."""
        with state().sessions() as session:
            members = session.scalars(
                select(Contact)
                .where(Contact.is_member.is_(True), Contact.merged_into.is_(None))
                .order_by(Contact.member_since.desc())
            ).all()
            items = []
            for m in members:
                ids = session.execute(
                    select(ContactIdentity.kind, ContactIdentity.value).where(
                        ContactIdentity.lead_id == m.lead_id
                    )
                ).all()
                users = [v for k, v in ids if k == USER_ID]
                anons = [v for k, v in ids if k == ANONYMOUS_ID]
                row = session.execute(
                    select(func.count(), func.coalesce(func.sum(Order.revenue), 0)).where(
                        or_(
                            and_(Order.user_id.is_not(None), Order.user_id.in_(users)),
                            and_(Order.user_id.is_(None), Order.anonymous_id.in_(anons)),
                        )
                    )
                ).one()
                items.append(
                    {
                        "lead_id": m.lead_id,
                        "email": m.email,
                        "user_id": m.user_id,
                        "member_since": m.member_since,
                        "orders": row[0],
                        "revenue": Decimal(str(row[1])),
                    }
                )
            return {"items": items, "total": len(items)}

"""What a campaign achieved: audience, dispatched, skipped by reason, published, and
conversions — people who completed an order within the campaign's attribution window
after their dispatch — with the revenue of those orders. Set-based queries."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from services.member_retargeting.models import Campaign, CampaignRun, Dispatch, outbox
from services.member_retargeting.people.members import orders_of


def report(session: Session, campaign: Campaign) -> dict[str, Any]:
    counts = dict(
        session.execute(
            select(Dispatch.status, func.count())
            .where(Dispatch.campaign_id == campaign.id)
            .group_by(Dispatch.status)
        ).all()
    )
    skipped = dict(
        session.execute(
            select(Dispatch.skip_reason, func.count())
            .where(Dispatch.campaign_id == campaign.id, Dispatch.status == "skipped")
            .group_by(Dispatch.skip_reason)
        ).all()
    )
    # Sent rows are pruned from the outbox after the dedupe horizon, unsent ones never: a
    # dispatch is published unless its row is still waiting.
    waiting = session.scalar(
        select(func.count())
        .select_from(Dispatch)
        .join(outbox, outbox.c.event_id == Dispatch.event_id)
        .where(Dispatch.campaign_id == campaign.id, outbox.c.sent_at.is_(None))
    )
    sent = int(counts.get("sent", 0))
    first_dispatch = (
        select(
            Dispatch.contact_id,
            func.min(Dispatch.created_at).label("at"),
            func.max(Dispatch.attributed_until).label("until"),
        )
        .where(Dispatch.campaign_id == campaign.id, Dispatch.status == "sent")
        .group_by(Dispatch.contact_id)
        .subquery()
    )
    orders = orders_of(select(first_dispatch.c.contact_id)).subquery()
    converted = (
        select(orders.c.contact_id, orders.c.revenue)
        .join(first_dispatch, first_dispatch.c.contact_id == orders.c.contact_id)
        .where(
            and_(
                orders.c.occurred_at >= first_dispatch.c.at,
                orders.c.occurred_at <= first_dispatch.c.until,
            )
        )
        .subquery()
    )
    conversions, revenue = session.execute(
        select(
            func.count(func.distinct(converted.c.contact_id)),
            func.coalesce(func.sum(converted.c.revenue), 0),
        )
    ).one()
    runs = session.scalars(
        select(CampaignRun).where(CampaignRun.campaign_id == campaign.id).order_by(CampaignRun.id)
    ).all()
    return {
        "audience_size": runs[-1].audience_size if runs else 0,
        "dispatched_count": sent,
        "published_count": sent - int(waiting or 0),
        "skipped_count": int(counts.get("skipped", 0)),
        "skipped": {str(k): int(v) for k, v in skipped.items()},
        "conversions": int(conversions),
        "revenue": Decimal(str(revenue)).quantize(Decimal("0.01")),
        "attribution_days": campaign.attribution_days,
    }

"""What a campaign achieved: audience, dispatched, skipped by reason, published, what
became of the messages (sent, failed, bounced, opened, clicked, unsubscribed: from the
delivery statuses, :mod:`..processing.delivery`), and
conversions — people who completed an order within the attribution window of one of
their dispatches (from the sending to ``attributed_until``) — with the revenue of those
orders, each order counted once. Set-based queries."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.member_retargeting.models import (
    Campaign,
    CampaignRun,
    DeliveryOutcome,
    Dispatch,
    outbox,
)
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
    conversions, revenue = session.execute(_conversions(campaign)).one()
    latest = session.scalar(
        select(CampaignRun.audience_size)
        .where(CampaignRun.campaign_id == campaign.id)
        .order_by(CampaignRun.id.desc())
        .limit(1)
    )
    return {
        "audience_size": int(latest or 0),
        "dispatched_count": sent,
        "published_count": sent - int(waiting or 0),
        "skipped_count": int(counts.get("skipped", 0)),
        "skipped": {str(k): int(v) for k, v in skipped.items()},
        "conversions": int(conversions),
        "revenue": Decimal(str(revenue)).quantize(Decimal("0.01")),
        "attribution_days": campaign.attribution_days,
        "delivery": _delivery(session, campaign, sent),
    }


def _delivery(session: Session, campaign: Campaign, dispatched: int) -> dict[str, int]:
    o = DeliveryOutcome
    status = dict(
        session.execute(
            select(o.status, func.count())
            .where(o.campaign_id == campaign.id, o.status.is_not(None))
            .group_by(o.status)
        ).all()
    )
    delivered, opened, clicked, unsubscribed = session.execute(
        select(
            func.count(o.delivered_at),
            func.count(o.opened_at),
            func.count(o.clicked_at),
            func.count(o.unsubscribed_at),
        ).where(o.campaign_id == campaign.id)
    ).one()
    known = sum(int(v) for v in status.values())
    return {
        "sent": int(status.get("sent", 0)),
        "delivered": int(delivered),
        "failed": int(status.get("failed", 0)),
        "bounced": int(status.get("bounced", 0)),
        "suppressed": int(status.get("suppressed", 0)),
        "pending": max(0, dispatched - known),
        "opened": int(opened),
        "clicked": int(clicked),
        "unsubscribed": int(unsubscribed),
    }


def _conversions(campaign: Campaign) -> Any:
    """``(people, revenue)``: the orders that fall inside the attribution window of one of
    the campaign's dispatches to their person (from its sending to its
    ``attributed_until``), each order counted once however many windows hold it, and the
    distinct people who placed them. An order between two windows counts for neither."""
    reached = select(Dispatch.contact_id).where(
        Dispatch.campaign_id == campaign.id, Dispatch.status == "sent"
    )
    orders = orders_of(reached).subquery()
    window = (
        select(Dispatch.id)
        .where(
            Dispatch.campaign_id == campaign.id,
            Dispatch.status == "sent",
            Dispatch.contact_id == orders.c.contact_id,
            Dispatch.created_at <= orders.c.occurred_at,
            Dispatch.attributed_until >= orders.c.occurred_at,
        )
        .exists()
    )
    converted = (
        select(orders.c.order_id, orders.c.contact_id, orders.c.revenue)
        .where(window)
        .distinct()
        .subquery()
    )
    return select(
        func.count(func.distinct(converted.c.contact_id)),
        func.coalesce(func.sum(converted.c.revenue), 0),
    )

"""When campaigns start by themselves (the scheduler process calls these):

* on a schedule: a campaign with ``schedule_at`` runs once when that time has come (its
  idempotency key is the time, so a restarted scheduler never runs it twice);
* on an event with a delay: ``{"event": "Product Added", "delay_hours": 4, "unless":
  "Order Completed"}`` reaches, every ``every_minutes``, the people in the campaign's
  segment who did the event between ``delay_hours`` and ``delay_hours`` + the lookback
  ago, did not do ``unless`` since, and have not had this campaign for that event yet (cart
  abandonment). Each pass is a run keyed by its time slot.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, select
from sqlalchemy.orm import Session, aliased

from services.member_retargeting.campaigns.runs import start
from services.member_retargeting.models import (
    Behaviour,
    Campaign,
    CampaignRun,
    Contact,
    ContactIdentity,
    Dispatch,
)

log = logging.getLogger(__name__)
LOOKBACK = timedelta(days=2)
EVERY = timedelta(minutes=15)


def due_schedules(session: Session, now: datetime) -> list[CampaignRun]:
    """Start every scheduled campaign whose time has come (once each)."""
    due = select(Campaign).where(Campaign.schedule_at.is_not(None), Campaign.schedule_at <= now)

    def begin(campaign: Campaign) -> tuple[CampaignRun, bool]:
        assert campaign.schedule_at is not None
        return start(
            session,
            campaign,
            key=f"schedule:{campaign.schedule_at.isoformat()}",
            trigger="schedule",
            requested_by="scheduler",
            now=now,
        )

    return _each(session, list(session.scalars(due)), begin)


def event_triggers(session: Session, now: datetime) -> list[CampaignRun]:
    """Start a run for each event-triggered campaign's current time slot."""
    slot = int(now.timestamp() // EVERY.total_seconds())

    def begin(campaign: Campaign) -> tuple[CampaignRun, bool]:
        trigger: dict[str, Any] = campaign.trigger or {}
        return start(
            session,
            campaign,
            key=f"event:{slot}",
            trigger=f"event:{trigger.get('event')}",
            requested_by="scheduler",
            now=now,
            extra=_after_event(campaign, trigger, now),
        )

    campaigns = list(session.scalars(select(Campaign).where(Campaign.trigger.is_not(None))))
    return _each(session, campaigns, begin)


def _each(
    session: Session,
    campaigns: list[Campaign],
    begin: Callable[[Campaign], tuple[CampaignRun, bool]],
) -> list[CampaignRun]:
    """Start each campaign in a savepoint of its own: one whose stored rule no longer
    compiles (or any other fault of its own) is logged and skipped, never stopping the
    others."""
    started = []
    for campaign in campaigns:
        try:
            with session.begin_nested():
                run, created = begin(campaign)
        except Exception:
            log.exception("campaign %s could not start; the others go on", campaign.id)
            continue
        if created:
            started.append(run)
    return started


def _after_event(campaign: Campaign, trigger: dict[str, Any], now: datetime) -> Any:
    """People who did the event a delay ago, not ``unless`` since, not reached yet."""
    delay = timedelta(hours=float(trigger.get("delay_hours", 0)))
    b, ci = aliased(Behaviour), aliased(ContactIdentity)
    did = exists(
        select(b.id)
        .join(ci, and_(ci.kind == b.kind, ci.value == b.value))
        .where(
            ci.lead_id == Contact.lead_id,
            b.event == trigger["event"],
            b.at <= now - delay,
            b.at > now - delay - LOOKBACK,
        )
    )
    condition: Any = did
    unless = trigger.get("unless")
    if unless:
        u, ui = aliased(Behaviour), aliased(ContactIdentity)
        condition = condition & ~exists(
            select(u.id)
            .join(ui, and_(ui.kind == u.kind, ui.value == u.value))
            .where(
                ui.lead_id == Contact.lead_id,
                u.event == unless,
                u.at > now - delay - LOOKBACK,
            )
        )
    reached = exists().where(
        Dispatch.campaign_id == campaign.id,
        Dispatch.contact_id == Contact.lead_id,
        Dispatch.created_at > now - delay - LOOKBACK,
    )
    return condition & ~reached

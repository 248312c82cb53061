"""When campaigns start by themselves (the scheduler process calls these):

* on a schedule: a campaign with ``schedule_at`` runs once when that time has come (its
  idempotency key is the time, so a restarted scheduler never runs it twice; a campaign
  whose scheduled run exists is not looked at again);
* on an event with a delay: ``{"event": "Product Added", "delay_hours": 4, "unless":
  "Order Completed"}`` reaches, every ``every_minutes``, the people in the campaign's
  segment who did the event between ``delay_hours`` and ``delay_hours`` + the lookback
  ago with no ``unless`` at or after it (cart abandonment: an order before the cart
  does not save it), and who have not had this campaign in that time — neither sent
  (a dispatch) nor on their way (a recipient of one of its runs started since, which
  may not have reached them yet). Each pass is a run keyed by its time slot; a slot
  with nobody to reach starts no run (the scheduler remembers it was empty and does not
  look again until the next slot).
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
    RunRecipient,
)

log = logging.getLogger(__name__)
LOOKBACK = timedelta(days=2)
EVERY = timedelta(minutes=15)


def due_schedules(session: Session, now: datetime) -> list[CampaignRun]:
    """Start every scheduled campaign whose time has come (once each). Campaigns whose
    scheduled run exists (started at or after their time) are filtered out in SQL."""
    started = (
        select(CampaignRun.id)
        .where(
            CampaignRun.campaign_id == Campaign.id,
            CampaignRun.trigger == "schedule",
            CampaignRun.triggered_at >= Campaign.schedule_at,
        )
        .exists()
    )
    due = select(Campaign).where(
        Campaign.schedule_at.is_not(None), Campaign.schedule_at <= now, ~started
    )

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


def event_triggers(
    session: Session, now: datetime, quiet: dict[int, int] | None = None
) -> list[CampaignRun]:
    """Start a run for each event-triggered campaign's current time slot, unless nobody
    is to be reached in it. ``quiet`` (campaign id → the slot it had nobody in; the
    caller keeps it between passes) spares evaluating a campaign again in that slot."""
    slot = int(now.timestamp() // EVERY.total_seconds())
    quiet = {} if quiet is None else quiet

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

    campaigns = [
        c
        for c in session.scalars(select(Campaign).where(Campaign.trigger.is_not(None)))
        if quiet.get(c.id) != slot
    ]
    started = _each(session, campaigns, begin, keep_empty=False)
    for campaign in campaigns:
        if not any(run.campaign_id == campaign.id for run in started):
            quiet[campaign.id] = slot  # nobody new (or its run exists): not again this slot
    return started


def _each(
    session: Session,
    campaigns: list[Campaign],
    begin: Callable[[Campaign], tuple[CampaignRun, bool]],
    *,
    keep_empty: bool = True,
) -> list[CampaignRun]:
    """Start each campaign in a savepoint of its own: one whose stored rule no longer
    compiles (or any other fault of its own) is logged and skipped, never stopping the
    others. Without ``keep_empty`` a run that would reach nobody is not kept."""
    started = []
    for campaign in campaigns:
        savepoint = session.begin_nested()
        try:
            run, created = begin(campaign)
        except Exception:
            savepoint.rollback()
            log.exception("campaign %s could not start; the others go on", campaign.id)
            continue
        if created and run.audience_size == 0 and not keep_empty:
            savepoint.rollback()  # no run row for nobody
            continue
        savepoint.commit()
        if created:
            started.append(run)
    return started


def _after_event(campaign: Campaign, trigger: dict[str, Any], now: datetime) -> Any:
    """People who did the event a delay ago with no ``unless`` at or after it, not
    reached by this campaign since (nor in one of its runs started since)."""
    delay = timedelta(hours=float(trigger.get("delay_hours", 0)))
    since = now - delay - LOOKBACK
    b, ci = aliased(Behaviour), aliased(ContactIdentity)
    where: list[Any] = [
        ci.lead_id == Contact.lead_id,
        b.event == trigger["event"],
        b.at <= now - delay,
        b.at > since,
    ]
    unless = trigger.get("unless")
    if unless:
        # Correlated with the triggering event: an order before the cart does not count.
        u, ui = aliased(Behaviour), aliased(ContactIdentity)
        where.append(
            ~exists(
                select(u.id)
                .join(ui, and_(ui.kind == u.kind, ui.value == u.value))
                .where(ui.lead_id == ci.lead_id, u.event == unless, u.at >= b.at)
            )
        )
    did = exists(select(b.id).join(ci, and_(ci.kind == b.kind, ci.value == b.value)).where(*where))
    sent = exists().where(
        Dispatch.campaign_id == campaign.id,
        Dispatch.contact_id == Contact.lead_id,
        Dispatch.created_at > since,
    )
    pending = exists(
        select(RunRecipient.run_id)
        .join(CampaignRun, CampaignRun.id == RunRecipient.run_id)
        .where(
            CampaignRun.campaign_id == campaign.id,
            CampaignRun.triggered_at > since,
            RunRecipient.contact_id == Contact.lead_id,
        )
    )
    return did & ~sent & ~pending

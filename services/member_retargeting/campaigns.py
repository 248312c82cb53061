"""Triggering a campaign: one run, its audience, one dispatch per recipient — all in the
caller's transaction, with the dispatch events in the outbox so they are published
exactly when the run is committed."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import Table, insert
from sqlalchemy.orm import Session

from services.member_retargeting.models import Campaign, CampaignRun, Dispatch
from services.member_retargeting.segments import audience_query
from shared.events import new_event
from shared.outbox import Outgoing, enqueue
from shared.topics import DISPATCH, MEMBER_RETARGETING


@dataclass(frozen=True)
class RunResult:
    run_id: int
    audience_size: int


def trigger(session: Session, campaign: Campaign, outbox_table: Table, trigger: str) -> RunResult:
    recipients = session.scalars(audience_query(campaign.segment, campaign.channel)).all()
    run = CampaignRun(campaign_id=campaign.id, trigger=trigger, audience_size=len(recipients))
    session.add(run)
    session.flush()
    dispatches = []
    outgoing = []
    for contact in recipients:
        envelope = new_event(
            "campaign.dispatch",
            {
                "campaign_id": campaign.id,
                "run_id": run.id,
                "contact_id": contact.lead_id,
                "email": contact.email,
                "channel": campaign.channel,
                "message": campaign.message,
            },
            source=MEMBER_RETARGETING,
            event_id=uuid.uuid4().hex,
            user_id=contact.user_id,
        )
        dispatches.append(
            {
                "run_id": run.id,
                "campaign_id": campaign.id,
                "contact_id": contact.lead_id,
                "event_id": envelope.event_id,
            }
        )
        outgoing.append(Outgoing(DISPATCH, contact.lead_id, envelope))
    if dispatches:
        session.execute(insert(Dispatch), dispatches)
        enqueue(session, outbox_table, outgoing)
    return RunResult(run_id=run.id, audience_size=len(recipients))

"""Campaign runs: a background job, in chunks, exactly once per recipient.

Starting a run (:func:`start`) takes an idempotency key: the same key for the same
campaign returns the run it started before, never a second one. The run's audience is
fixed then, in one set-based INSERT … SELECT of the segment (``run_recipients``), so
the segment changing meanwhile changes nothing.

The scheduler process then works each run a chunk at a time (:func:`work`), one
transaction per chunk: for each recipient not handled yet, the checks of
:mod:`..people.policy` at send time — consent for the channel's purpose, suppression,
the frequency cap — and an address for the channel that the suppression list can be
checked against (an e-mail or phone that cannot be normalised has no suppression key:
nothing is sent to it, ``unverifiable_address``); a recipient who fails one is recorded
as ``skipped`` with the reason; the others get one ``campaign.dispatch`` event (in the
outbox, id derived from run and person) and a line in the sharing ledger naming what the
event carries of them (their ids, the address, the fields the message's template reads).
All of a chunk commits together or not at all, and ``dispatches`` is unique per run and
person: a process killed mid-run and restarted sends each recipient exactly once.

Two scheduler processes may work two campaigns' runs at once: a marketing chunk locks its
people's contact rows (``SELECT … FOR UPDATE`` in lead-id order) before counting their
messages for the cap, so the second waits for the first to commit and then sees its
messages (PostgreSQL; SQLite lets one writer at a time anyway).

An e-mail body may be HTML: the person's fields are HTML-escaped in it; other texts are
plain.

An ``ads`` campaign is not a message: a run exports its consenting recipients as a hashed
audience (:mod:`..sharing.exports`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, literal, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.member_retargeting.model.consent import ANALYTICS, CHANNEL_PURPOSE
from services.member_retargeting.model.segments import parse
from services.member_retargeting.model.templates import fields_used, render
from services.member_retargeting.models import (
    Campaign,
    CampaignRun,
    Contact,
    Dispatch,
    RunRecipient,
    outbox,
)
from services.member_retargeting.people.affinity import affinities
from services.member_retargeting.people.policy import consented, over_cap, suppressed, unsubscribed
from services.member_retargeting.people.segments import condition
from services.member_retargeting.sharing.ledger import record_sharing
from shared.events import derived_id, new_event
from shared.outbox import Outgoing, enqueue
from shared.topics import DISPATCH, MEMBER_RETARGETING

# Why a recipient got nothing, as reports count them.
UNSUBSCRIBED, NO_CONSENT, SUPPRESSED, CAPPED, NO_ADDRESS, UNVERIFIABLE, GONE = (
    "unsubscribed",
    "no_consent",
    "suppressed",
    "frequency_cap",
    "no_address",
    "unverifiable_address",
    "merged_or_gone",
)
# The contact's address each channel sends to, and the suppression key kept for it.
ADDRESS = {"email": "email", "sms": "phone", "whatsapp": "phone"}
ADDRESS_KEY = {"email": "email_key", "phone": "phone_key"}


@dataclass(frozen=True)
class Limits:
    """The frequency cap and the chunk size, from the service's configuration."""

    per_day: int
    per_week: int
    chunk: int = 500


def start(
    session: Session,
    campaign: Campaign,
    *,
    key: str,
    trigger: str,
    requested_by: str,
    now: datetime,
    extra: Any = None,
) -> tuple[CampaignRun, bool]:
    """The run for ``key`` (``created`` False when it existed). ``extra`` narrows the
    audience further (an event trigger's condition). Its recipients are fixed now."""
    existing = session.scalar(
        select(CampaignRun).where(
            CampaignRun.campaign_id == campaign.id, CampaignRun.idempotency_key == key
        )
    )
    if existing is not None:
        return existing, False
    run = CampaignRun(
        campaign_id=campaign.id,
        trigger=trigger,
        idempotency_key=key,
        status="pending",
        requested_by=requested_by,
        triggered_at=now,
        audience_size=0,
        processed=0,
    )
    try:
        with session.begin_nested():
            session.add(run)
            session.flush()
    except IntegrityError:  # the same key, started a moment ago by another request
        found = session.scalar(
            select(CampaignRun).where(
                CampaignRun.campaign_id == campaign.id, CampaignRun.idempotency_key == key
            )
        )
        assert found is not None
        return found, False
    match = condition(parse(campaign.segment), now)
    if extra is not None:
        match = match & extra
    position = func.row_number().over(order_by=Contact.lead_id)
    session.execute(
        insert(RunRecipient).from_select(
            ["run_id", "contact_id", "position"],
            select(literal(run.id), Contact.lead_id, position).where(
                Contact.merged_into.is_(None), match
            ),
        )
    )
    run.audience_size = int(
        session.scalar(select(func.count()).where(RunRecipient.run_id == run.id)) or 0
    )
    if run.audience_size == 0:
        run.status, run.finished_at = "done", now
    return run, True


def work(session: Session, run: CampaignRun, limits: Limits, now: datetime) -> int:
    """Handle the next chunk of the run's recipients (in the caller's transaction, which
    must commit them all together); returns how many. Marks the run done at the end."""
    campaign = session.get(Campaign, run.campaign_id)
    assert campaign is not None
    # Recipients are numbered 1..N when the run starts and handled in that order, chunk
    # by chunk, each chunk committing with ``processed``: the next chunk starts after it.
    ids = list(
        session.scalars(
            select(RunRecipient.contact_id)
            .where(RunRecipient.run_id == run.id, RunRecipient.position > run.processed)
            .order_by(RunRecipient.position)
            .limit(limits.chunk)
        )
    )
    run.status = "running"
    if not ids:
        run.status, run.finished_at = "done", now
        return 0
    if campaign.channel == "ads":
        from services.member_retargeting.sharing.exports import export_run_chunk

        export_run_chunk(session, campaign, run, ids, now)
    else:
        _send(session, campaign, run, ids, limits, now)
    run.processed += len(ids)
    if run.processed >= run.audience_size:
        run.status, run.finished_at = "done", now
    return len(ids)


def _send(
    session: Session,
    campaign: Campaign,
    run: CampaignRun,
    ids: list[str],
    limits: Limits,
    now: datetime,
) -> None:
    purpose = CHANNEL_PURPOSE[campaign.channel]
    capping = campaign.kind != "transactional"
    people = (
        select(Contact)
        .where(Contact.lead_id.in_(ids))
        .order_by(Contact.lead_id)
        .execution_options(populate_existing=True)
    )
    if capping:
        # Before the cap is counted: another process sending to one of these people now
        # waits until this chunk commits, and then counts its messages too.
        people = people.with_for_update()
    contacts = {c.lead_id: c for c in session.scalars(people)}
    allowed = set(
        session.scalars(select(Contact.lead_id).where(Contact.lead_id.in_(ids), consented(purpose)))
    )
    blocked = set(
        session.scalars(select(Contact.lead_id).where(Contact.lead_id.in_(ids), suppressed()))
    )
    left = set(
        session.scalars(select(Contact.lead_id).where(Contact.lead_id.in_(ids), unsubscribed()))
    )
    # Opens and clicks are tracked only for people who allowed analytics.
    tracked = set(
        session.scalars(
            select(Contact.lead_id).where(Contact.lead_id.in_(ids), consented(ANALYTICS))
        )
    )
    live = [c for c in contacts.values() if c.merged_into is None]
    capped = over_cap(session, live, now, limits.per_day, limits.per_week) if capping else set()
    shared = _shared_fields(campaign)
    wants = affinities(session, [c.lead_id for c in live], now)
    rows: list[dict[str, Any]] = []
    outgoing: list[Outgoing] = []
    for contact_id in ids:
        contact = contacts.get(contact_id)
        reason = _skip_reason(contact, campaign.channel, allowed, blocked, capped, left)
        row = {
            "run_id": run.id,
            "campaign_id": campaign.id,
            "contact_id": contact_id,
            "channel": campaign.channel,
            "kind": campaign.kind,
            "created_at": now,
        }
        if reason is not None:
            rows.append(
                {
                    **row,
                    "status": "skipped",
                    "skip_reason": reason,
                    "event_id": None,
                    "attributed_until": None,
                }
            )
            continue
        assert contact is not None
        affinity = wants.get(contact_id)
        person = {
            "first_name": contact.first_name,
            "last_name": contact.last_name,
            "tier": contact.tier,
            "product": affinity.top_product if affinity else None,
            "category": affinity.categories[0][0] if affinity and affinity.categories else None,
            "company": contact.traits.get("company"),
        }
        event = _dispatch_event(campaign, run, contact, person, now, contact_id in tracked)
        rows.append(
            {
                **row,
                "status": "sent",
                "skip_reason": None,
                "event_id": event.event_id,
                "attributed_until": now + timedelta(days=campaign.attribution_days),
            }
        )
        outgoing.append(Outgoing(DISPATCH, contact_id, event))
        record_sharing(
            session,
            contact_id,
            destination=campaign.channel,
            fields=[*shared, "user_id"] if contact.user_id else shared,
            purpose=purpose,
            requested_by=run.requested_by,
            at=now,
            campaign_id=campaign.id,
        )
    session.execute(insert(Dispatch), rows)
    enqueue(session, outbox, outgoing, validate_payload=False)


def _shared_fields(campaign: Campaign) -> list[str]:
    """What a dispatch of the campaign carries of its recipient (the user id, when they
    have one, is added per person): their contact id, the channel's address and the
    fields the message's templates read."""
    used: set[str] = set()
    for key in ("subject", "body"):
        if key in campaign.message:
            used |= fields_used(str(campaign.message[key]))
    address = ADDRESS.get(campaign.channel)
    return ["contact_id", *([address] if address else []), *sorted(used)]


def _skip_reason(
    contact: Contact | None,
    channel: str,
    allowed: set[str],
    blocked: set[str],
    capped: set[str],
    left: set[str],
) -> str | None:
    if contact is None or contact.merged_into is not None:
        return GONE
    if contact.lead_id in left:
        return UNSUBSCRIBED
    if contact.lead_id not in allowed:
        return NO_CONSENT
    if contact.lead_id in blocked:
        return SUPPRESSED
    address = ADDRESS.get(channel)
    if address is not None and getattr(contact, address) is None:
        return NO_ADDRESS
    if address is not None and getattr(contact, ADDRESS_KEY[address]) is None:
        return UNVERIFIABLE  # the suppression list cannot be checked for it
    if contact.lead_id in capped:
        return CAPPED
    return None


def _dispatch_event(
    campaign: Campaign,
    run: CampaignRun,
    contact: Contact,
    person: dict[str, Any],
    now: datetime,
    tracking: bool,
) -> Any:
    html = campaign.channel == "email"
    message = {
        key: render(str(value), person, html=html and key == "body")
        if key in ("subject", "body")
        else value
        for key, value in campaign.message.items()
    }
    return new_event(
        "campaign.dispatch",
        {
            "campaign_id": campaign.id,
            "run_id": run.id,
            "contact_id": contact.lead_id,
            "email": contact.email if campaign.channel == "email" else None,
            "phone": contact.phone if campaign.channel in ("sms", "whatsapp") else None,
            "channel": campaign.channel,
            "kind": campaign.kind,
            "message": message,
            "tracking": tracking,  # e-mail: pixel and links; WhatsApp: read receipts
        },
        source=MEMBER_RETARGETING,
        event_id=derived_id(f"funnel:dispatch:{run.id}:{contact.lead_id}"),
        occurred_at=now,
        user_id=contact.user_id,
    )

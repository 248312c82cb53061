"""Delivery statuses into campaign reports: ``delivery.status`` events (from the
dispatcher, and from the unsubscribe, click and open endpoints) become one
``delivery_outcomes`` row per dispatch.

* ``sent`` / ``failed`` / ``bounced`` / ``suppressed``: the newest by time is the
  dispatch's delivery status (a bounce reported after the "sent" it corrects wins), with
  the provider's reply codes only (its text may quote the address); a bounce suppresses
  the address (reason ``bounced``), as a hard bounce must;
* ``delivered`` (a provider's receipt, :mod:`..delivery.receipts`): the earliest time is
  kept beside the delivery status, which stays ``sent`` (a later ``failed`` receipt
  still wins it);
* ``opened``, ``clicked``, ``unsubscribed``: the earliest time is kept, clicks are counted,
  and the first click is also a behaviour ``Email Link Clicked`` of the person (segments
  and attribution read behaviours).

Statuses of dispatches this service does not know (an erased person's, another
deployment's) change nothing.
"""

from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.member_retargeting.delivery.status import (
    BOUNCED,
    CLICKED,
    DELIVERED,
    FAILED,
    OPENED,
    SENT,
    SUPPRESSED,
    UNSUBSCRIBED,
)
from services.member_retargeting.models import (
    Behaviour,
    Contact,
    ContactIdentity,
    DeliveryOutcome,
    Dispatch,
    Suppression,
)
from shared.events import Envelope
from shared.outbox import Outgoing, insert_ignoring_duplicates

EMAIL_LINK_CLICKED = "Email Link Clicked"
MAX_CLICKS = 1_000_000


def handle_delivery(event: Envelope, session: Session) -> list[Outgoing]:
    if event.type != "delivery.status":
        return []
    p = event.payload
    dispatch = session.scalar(select(Dispatch).where(Dispatch.event_id == p["dispatch_id"]))
    if dispatch is None:
        return []
    outcome = session.get(DeliveryOutcome, p["dispatch_id"])
    if outcome is None:
        outcome = DeliveryOutcome(
            dispatch_id=p["dispatch_id"],
            campaign_id=dispatch.campaign_id,
            contact_id=dispatch.contact_id,
            channel=dispatch.channel,
            clicks=0,
        )
        session.add(outcome)
    status, at = p["status"], p["at"]
    if status in (SENT, FAILED, BOUNCED, SUPPRESSED):
        if outcome.status_at is None or at >= outcome.status_at:
            outcome.status, outcome.status_at = status, at
            outcome.detail = reply_codes(p.get("detail"))
        if status == BOUNCED:
            _suppress_bounced(session, dispatch.contact_id, at)
    elif status == DELIVERED:
        outcome.delivered_at = _earliest(outcome.delivered_at, at)
    elif status == OPENED:
        outcome.opened_at = _earliest(outcome.opened_at, at)
    elif status == UNSUBSCRIBED:
        outcome.unsubscribed_at = outcome.unsubscribed_at or at
    elif status == CLICKED:
        outcome.clicks = min(MAX_CLICKS, (outcome.clicks or 0) + 1)
        if outcome.clicked_at is None:
            _record_click(session, dispatch.contact_id, at, event.event_id)
        outcome.clicked_at = _earliest(outcome.clicked_at, at)
    return []


REPLY_CODES = re.compile(r"^\s*(\d{3})(?:[ -]+([245]\.\d{1,3}\.\d{1,3}))?")


def reply_codes(detail: str | None) -> str | None:
    """What a report keeps of a provider's reply: its codes (``550 5.1.1``, ``HTTP
    503``), never the text, which may quote the address."""
    if not detail:
        return None
    if detail.startswith("HTTP "):
        return detail[:8]
    found = REPLY_CODES.match(detail)
    if found is None:
        return detail.split(":", 1)[0][:60]  # an exception's class, a reason of ours
    return " ".join(part for part in found.groups() if part)


def _earliest(held: datetime | None, at: datetime) -> datetime:
    """Events can arrive out of order: keep the earliest time (both aware: the column is
    a UTCDateTime, the payload an AwareDateTime)."""
    return at if held is None or at < held else held


def _suppress_bounced(session: Session, contact_id: str, at: datetime) -> None:
    key = session.scalar(select(Contact.email_key).where(Contact.lead_id == contact_id))
    if not key:
        return
    session.execute(
        insert_ignoring_duplicates(
            Suppression.__table__,  # type: ignore[arg-type]
            session.get_bind().dialect.name,
        ),
        [
            {
                "value_hash": key,
                "kind": "email",
                "reason": "bounced",
                "created_by": "dispatcher",
                "created_at": at,
            }
        ],
    )


def _record_click(session: Session, contact_id: str, at: datetime, event_id: str) -> None:
    who = session.execute(
        select(ContactIdentity.kind, ContactIdentity.value)
        .where(ContactIdentity.lead_id == contact_id)
        .order_by(ContactIdentity.kind.desc(), ContactIdentity.value)  # user_id first
        .limit(1)
    ).first()
    if who is None:
        return
    session.add(
        Behaviour(kind=who[0], value=who[1], event=EMAIL_LINK_CLICKED, at=at, event_id=event_id)
    )

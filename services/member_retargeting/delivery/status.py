"""``delivery.status`` events: what happened to a dispatch, published on the delivery
topic for campaign reports (:mod:`..processing.delivery`) and anyone else who listens.

Statuses: ``sent`` (handed to the SMTP server, or the webhook receiver answered 2xx),
``delivered`` (an SMS or WhatsApp provider's receipt says it reached the phone:
:mod:`.receipts`), ``failed`` (given up after the retries, refused for good, or a
provider's receipt says it could not be delivered), ``bounced`` (the mail
server has no such mailbox), ``suppressed`` (the address was suppressed between the
dispatch and its sending: not sent), ``unsubscribed``,
``clicked``, ``opened``. Event ids are derived from what they report, so reporting the
same thing twice is one event.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from services.member_retargeting.models import Delivery, Dispatch
from shared.events import derived_id, new_event
from shared.outbox import Outgoing
from shared.topics import DELIVERY, MEMBER_RETARGETING

SENT, FAILED, BOUNCED, SUPPRESSED = "sent", "failed", "bounced", "suppressed"
DELIVERED = "delivered"
UNSUBSCRIBED, CLICKED, OPENED = "unsubscribed", "clicked", "opened"
MAX_DETAIL = 500


def dispatch_payload(dispatch: Dispatch | Delivery) -> dict[str, Any]:
    """What a status event needs of a dispatch, from its ``dispatches`` row or the
    dispatcher's ``deliveries`` row (the public endpoints, unsubscribes and receipts know
    a row, not the ``campaign.dispatch`` payload)."""
    return {
        "campaign_id": dispatch.campaign_id,
        "run_id": dispatch.run_id,
        "contact_id": dispatch.contact_id,
        "channel": dispatch.channel,
    }


def delivery_status(
    dispatch_id: str,
    payload: dict[str, Any],
    status: str,
    at: datetime,
    *,
    detail: str = "",
    url: str | None = None,
    occurrence: str = "",
) -> Outgoing:
    """The event saying ``status`` of the dispatch ``dispatch_id`` (its ``campaign.
    dispatch`` payload gives campaign, run, person and channel). ``occurrence`` tells
    apart reports of the same status that are different happenings (a second send after
    a retried bounce, another click)."""
    contact_id = str(payload.get("contact_id") or "")
    event = new_event(
        "delivery.status",
        {
            "dispatch_id": dispatch_id,
            "campaign_id": payload.get("campaign_id"),
            "run_id": payload.get("run_id"),
            "contact_id": contact_id,
            "channel": payload.get("channel"),
            "status": status,
            "at": at,
            "detail": detail[:MAX_DETAIL] or None,
            "url": url,
        },
        source=MEMBER_RETARGETING,
        event_id=derived_id(f"funnel:delivery:{dispatch_id}:{status}:{occurrence}"),
        occurred_at=at,
    )
    return Outgoing(DELIVERY, contact_id, event)

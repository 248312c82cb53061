"""The dispatcher's consumer side: ``campaign.dispatch`` events into its own store.

Each dispatch of a channel the dispatcher sends (e-mail, SMS, WhatsApp, webhook) becomes
one ``deliveries`` row keyed by the dispatch's event id, queued to send now: a
redelivered or replayed dispatch finds its row and adds nothing, so the store is what
makes "delivered once" hold however often Kafka hands a dispatch over. Audience parts
are exports, not messages: the ads platforms' uploaders read them from the topic.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from services.member_retargeting.models import Delivery
from shared.db import utcnow
from shared.events import Envelope
from shared.outbox import Outgoing, insert_ignoring_duplicates

SENDING_CHANNELS = frozenset({"email", "sms", "whatsapp", "webhook"})


def queue_dispatch(event: Envelope, session: Session) -> list[Outgoing]:
    if event.type != "campaign.dispatch":
        return []
    payload = event.payload
    if payload.get("channel") not in SENDING_CHANNELS:
        return []
    now = utcnow()
    statement = insert_ignoring_duplicates(
        Delivery.__table__,  # type: ignore[arg-type]
        session.get_bind().dialect.name,
    )
    session.execute(
        statement,
        [
            {
                "dispatch_id": event.event_id,
                "channel": payload["channel"],
                "campaign_id": payload["campaign_id"],
                "run_id": payload["run_id"],
                "contact_id": payload["contact_id"],
                "payload": payload,
                "status": "queued",
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
        ],
    )
    return []

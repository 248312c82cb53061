"""Pure event handlers of member-retargeting: an event and a session in, events out.

Lead events keep a contact per lead (the snapshot in every lead event is the whole
truth, and lead events arrive in order per lead); a move to ``customer`` makes the contact
a member. Traffic contributes completed orders, for lifetime value.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from services.member_retargeting.models import Contact, ContactIdentity, Order
from shared.events import Envelope
from shared.outbox import Outgoing

PURCHASE_EVENT = "Order Completed"


def _upsert_contact(session: Session, snapshot: dict[str, Any], at: Any) -> Contact:
    contact = session.get(Contact, snapshot["lead_id"])
    if contact is None:
        contact = Contact(lead_id=snapshot["lead_id"], is_member=False)
        session.add(contact)
    contact.stage = snapshot["stage"]
    contact.score = snapshot["score"]
    contact.email = snapshot.get("email")
    contact.user_id = snapshot.get("user_id")
    contact.traits = dict(snapshot.get("traits") or {})
    contact.updated_at = at
    if contact.stage == "customer" and not contact.is_member:
        contact.is_member = True
        contact.member_since = at
    ids = [("anonymous_id", a) for a in snapshot.get("anonymous_ids", [])]
    if contact.user_id:
        ids.append(("user_id", contact.user_id))
    for kind, value in ids:
        existing = session.get(ContactIdentity, (kind, value))
        if existing is None:
            session.add(ContactIdentity(kind=kind, value=value, lead_id=contact.lead_id))
        else:
            existing.lead_id = contact.lead_id
    return contact


def handle_lead(event: Envelope, session: Session) -> list[Outgoing]:
    snapshot = event.payload["lead"]
    _upsert_contact(session, snapshot, event.occurred_at)
    if event.type == "lead.merged":
        merged_id = event.payload["merged_lead_id"]
        session.execute(
            update(Contact)
            .where(Contact.lead_id == merged_id)
            .values(merged_into=snapshot["lead_id"])
        )
        session.execute(
            update(ContactIdentity)
            .where(ContactIdentity.lead_id == merged_id)
            .values(lead_id=snapshot["lead_id"])
        )
    return []


def _money(value: Any) -> Decimal:
    try:
        amount = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return Decimal(0)
    return amount if amount.is_finite() else Decimal(0)


def handle_traffic(event: Envelope, session: Session) -> list[Outgoing]:
    if event.type != "track" or event.payload.get("event") != PURCHASE_EVENT:
        return []
    props = event.payload.get("properties", {})
    currency = props.get("currency")
    session.add(
        Order(
            event_id=event.event_id,
            user_id=event.user_id,
            anonymous_id=event.anonymous_id,
            revenue=_money(props.get("revenue", props.get("total", 0))),
            currency=currency[:3].upper() if isinstance(currency, str) and currency else None,
            occurred_at=event.occurred_at,
        )
    )
    return []

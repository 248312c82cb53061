"""Pure event handlers of member-retargeting: an event and a session in, events out.

Lead events keep a contact per lead (the snapshot in every lead event is the whole
truth); a snapshot older than the one the contact holds (by its ``version``) is ignored,
since lead events of one lead can arrive out of order. A merge marks the merged contact;
a split brings it back with its identifiers. A move to ``customer`` makes the
contact a member. Traffic contributes completed orders, for lifetime value; an amount
beyond what an order can hold is refused (a dead letter), not stored.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from services.member_retargeting.models import Contact, ContactIdentity, Order
from shared.events import ORDER_COMPLETED, Envelope, InvalidEvent
from shared.identity import ANONYMOUS_ID, USER_ID
from shared.limits import MAX_MONEY, money
from shared.outbox import Outgoing


def _upsert_contact(session: Session, snapshot: dict[str, Any], at: Any) -> Contact:
    contact = session.get(Contact, snapshot["lead_id"])
    if contact is None:
        contact = Contact(lead_id=snapshot["lead_id"], is_member=False)
        session.add(contact)
    version = snapshot.get("version")
    if version is not None and contact.lead_version is not None and version < contact.lead_version:
        return contact  # an older picture of the lead than the one we hold
    contact.lead_version = version
    contact.stage = snapshot["stage"]
    contact.score = snapshot["score"]
    contact.email = snapshot.get("email")
    contact.user_id = snapshot.get("user_id")
    contact.traits = dict(snapshot.get("traits") or {})
    contact.updated_at = at
    if contact.stage == "customer" and not contact.is_member:
        contact.is_member = True
        contact.member_since = at
    ids = [(ANONYMOUS_ID, a) for a in snapshot.get("anonymous_ids", [])]
    if contact.user_id:
        ids.append((USER_ID, contact.user_id))
    for kind, value in ids:
        existing = session.get(ContactIdentity, (kind, value))
        if existing is None:
            session.add(ContactIdentity(kind=kind, value=value, lead_id=contact.lead_id))
        else:
            existing.lead_id = contact.lead_id
    return contact


def handle_lead(event: Envelope, session: Session) -> list[Outgoing]:
    snapshot = event.payload["lead"]
    _upsert_contact(session, snapshot, event.effective_at)
    if event.type == "lead.split":
        # A wrong merge undone: the other person is a contact of their own again, with
        # their identifiers (and so their orders) back.
        split_off = _upsert_contact(session, event.payload["split_lead"], event.effective_at)
        split_off.merged_into = None
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


def _revenue(properties: dict[str, Any]) -> Decimal:
    value = properties.get("revenue", properties.get("total"))
    if value is None:
        return Decimal(0)
    amount = money(value)
    if amount is None:
        raise InvalidEvent(f"order amount {str(value)[:40]!r} is not a number within ±{MAX_MONEY}")
    return amount


def handle_traffic(event: Envelope, session: Session) -> list[Outgoing]:
    if event.type != "track" or event.payload.get("event") != ORDER_COMPLETED:
        return []
    props = event.payload.get("properties", {})
    currency = props.get("currency")
    session.add(
        Order(
            event_id=event.event_id,
            user_id=event.user_id,
            anonymous_id=event.anonymous_id,
            revenue=_revenue(props),
            currency=currency[:3].upper() if isinstance(currency, str) and currency else None,
            occurred_at=event.effective_at,
        )
    )
    return []

"""Contacts from lead events: a handler of the leads topic (events and a session in,
events to publish out; no Kafka, no commits).

The snapshot in every lead event is the whole truth about the person; a snapshot older
than the one the contact holds (by its ``version``) is ignored, since lead events of one
lead can arrive out of order. A merge marks the merged contact; a split brings it back
with its identifiers. After each picture the membership is refreshed: orders that
arrived before the person was known now count (:func:`..people.members.refresh`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from services.member_retargeting.model.audiences import region_code
from services.member_retargeting.model.suppression import EMAIL, PHONE, suppression_key
from services.member_retargeting.model.tiers import TierRules
from services.member_retargeting.models import Contact, ContactIdentity
from services.member_retargeting.people.members import refresh
from services.member_retargeting.processing import journeys
from shared.db import utcnow
from shared.events import Envelope
from shared.identity import ANONYMOUS_ID, USER_ID
from shared.limits import truncate
from shared.outbox import Outgoing


def handle_lead(event: Envelope, session: Session, tiers: TierRules) -> list[Outgoing]:
    contact = upsert_contact(session, event.payload["lead"], event)
    contacts = [contact]
    if event.type == "lead.split":
        # A wrong merge undone: the other person is a contact of their own again, with
        # their identifiers (and so their orders) back.
        split_off = upsert_contact(session, event.payload["split_lead"], event)
        split_off.merged_into = None
        contacts.append(split_off)
    if event.type == "lead.merged":
        merged_id = event.payload["merged_lead_id"]
        session.execute(
            update(Contact).where(Contact.lead_id == merged_id).values(merged_into=contact.lead_id)
        )
        session.execute(
            update(ContactIdentity)
            .where(ContactIdentity.lead_id == merged_id)
            .values(lead_id=contact.lead_id)
        )
    session.flush()
    journeys.on_lead(session, event)
    now = utcnow()
    return [out for c in contacts for out in refresh(session, c, tiers, now)]


def upsert_contact(session: Session, snapshot: dict[str, Any], event: Envelope) -> Contact:
    contact = session.get(Contact, snapshot["lead_id"])
    if contact is None:
        contact = Contact(lead_id=snapshot["lead_id"], is_member=False)
        session.add(contact)
    version = snapshot.get("version")
    if version is not None and contact.lead_version is not None and version < contact.lead_version:
        return contact  # an older picture of the lead than the one we hold
    traits = dict(snapshot.get("traits") or {})
    contact.lead_version = version
    contact.stage = snapshot["stage"]
    contact.score = snapshot["score"]
    contact.email = snapshot.get("email")
    contact.user_id = snapshot.get("user_id")
    contact.traits = traits
    contact.intent = dict(snapshot.get("intent") or {})
    contact.phone = _text(traits.get("phone"), 64)
    first, last = _names(traits)
    contact.first_name, contact.last_name = first, last
    contact.country = _text(_country(traits), 64)
    contact.country_key = contact.country.casefold() if contact.country else None
    # The phone's default region: the country as a code, or as its English name.
    region = region_code(contact.country) if contact.country else None
    contact.email_key = suppression_key(EMAIL, contact.email)
    contact.phone_key = suppression_key(PHONE, contact.phone, region)
    contact.timezone = _text(traits.get("timezone"), 64)
    contact.updated_at = event.effective_at
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


def _text(value: Any, limit: int) -> str | None:
    return truncate(value.strip(), limit) or None if isinstance(value, str) else None


def _names(traits: dict[str, Any]) -> tuple[str | None, str | None]:
    """Segment's spec traits: ``firstName`` / ``lastName``, else split ``name``."""
    first = _text(traits.get("firstName") or traits.get("first_name"), 200)
    last = _text(traits.get("lastName") or traits.get("last_name"), 200)
    name = _text(traits.get("name"), 200)
    if first is None and last is None and name:
        parts = name.split(None, 1)
        first, last = parts[0], parts[1] if len(parts) > 1 else None
    return first, last


def _country(traits: dict[str, Any]) -> Any:
    address = traits.get("address")
    if isinstance(address, dict) and address.get("country"):
        return address.get("country")
    return traits.get("country")

"""member-retargeting's part in privacy (the consumer applies requests from the privacy
topic; lead-scoring coordinates them).

Erasure: the person's contacts (the lead ids the request names, and whoever holds one of
its identifiers) go with their identifiers, what they did (behaviours), consent
decisions, run recipients and sharing ledger lines, their funnel journeys (the person then counts in
no funnel report, as they count in no service), the dispatcher's deliveries (address
and message), and the dispatches, audience parts and delivery statuses still in either
outbox that name them. Orders are anonymised (no ids: revenue totals and
campaign reports keep their sums) and dispatches keep their counts under an anonymous
contact id. Suppression entries stay: they are hashes, and they mean "never contact".
The identifiers are remembered by hash, so lead and traffic events that still name the
person — later, or replayed — are dropped (:func:`shared.privacy.without_erased`).

Access: the same stores, as they are, with the sharing ledger (which destinations
received the person's data, and when).
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.orm import Session

from services.member_retargeting.models import (
    Behaviour,
    Consent,
    Contact,
    ContactIdentity,
    Delivery,
    DeliveryOutcome,
    Dispatch,
    Journey,
    JourneyIdentity,
    Order,
    RunRecipient,
    SharingRecord,
    audit_log,
    dispatcher_outbox,
    erased_people,
    outbox,
)
from shared.audit import scrub
from shared.events import Envelope
from shared.identity import ANONYMOUS_ID, EMAIL, USER_ID
from shared.outbox import Outgoing
from shared.privacy import (
    LEAD_ID,
    MAX_ACCESS_ITEMS,
    Identifier,
    access_part,
    erasure_completed,
    remember_erased,
    requested_identifiers,
    rows_mentioning,
)
from shared.topics import MEMBER_RETARGETING


def handle_privacy(event: Envelope, session: Session) -> list[Outgoing]:
    if event.type == "privacy.erasure_requested":
        return [erase(session, event)]
    if event.type == "privacy.access_requested":
        return [export(session, event)]
    return []


def _who(session: Session, identifiers: list[Identifier]) -> tuple[list[str], set[tuple[str, str]]]:
    """The person's contact ids and every (kind, value) they are known by here."""
    contacts = {i.value for i in identifiers if i.kind == LEAD_ID}
    ids = {(i.kind, i.value) for i in identifiers if i.kind in (USER_ID, ANONYMOUS_ID)}
    for kind, value in sorted(ids):
        contacts.update(
            session.scalars(
                select(ContactIdentity.lead_id).where(
                    ContactIdentity.kind == kind, ContactIdentity.value == value
                )
            )
        )
    emails = [i.value for i in identifiers if i.kind == EMAIL]
    if emails:
        contacts.update(session.scalars(select(Contact.lead_id).where(Contact.email.in_(emails))))
    if contacts:
        ids.update(
            (kind, value)
            for kind, value in session.execute(
                select(ContactIdentity.kind, ContactIdentity.value).where(
                    ContactIdentity.lead_id.in_(contacts)
                )
            )
        )
    return sorted(contacts), ids


def _by_ids(model: Any, ids: set[tuple[str, str]]) -> Any:
    return or_(*(and_(model.kind == k, model.value == v) for k, v in sorted(ids)))


def _orders(ids: set[tuple[str, str]]) -> Any:
    users = [v for k, v in ids if k == USER_ID]
    anonymous = [v for k, v in ids if k == ANONYMOUS_ID]
    return or_(Order.user_id.in_(users), Order.anonymous_id.in_(anonymous))


def _journeys(session: Session, contacts: list[str], ids: set[tuple[str, str]]) -> list[int]:
    """The person's journeys: their leads', the anonymous ones their ids are on, and every
    journey folded into one of those (visits found to be theirs). A journey that is
    another lead's stays (a shared browser's id on it is deleted, not the journey)."""
    found = set(session.scalars(select(Journey.id).where(Journey.lead_id.in_(contacts))))
    if ids:
        found.update(
            session.scalars(
                select(Journey.id)
                .join(JourneyIdentity, JourneyIdentity.journey_id == Journey.id)
                .where(_by_ids(JourneyIdentity, ids))
                .where(or_(Journey.lead_id.is_(None), Journey.lead_id.in_(contacts)))
            )
        )
    if found:
        found.update(session.scalars(select(Journey.id).where(Journey.merged_into.in_(found))))
    return sorted(found)


def erase(session: Session, event: Envelope) -> Outgoing:
    request_id = event.payload["request_id"]
    identifiers = requested_identifiers(event)
    contacts, ids = _who(session, identifiers)
    counts: dict[str, int] = {
        "erased_identifiers": remember_erased(session, erased_people, identifiers, request_id)
    }

    def count(name: str, result: Any) -> None:
        counts[name] = counts.get(name, 0) + int(getattr(result, "rowcount", 0) or 0)

    journeys = _journeys(session, contacts, ids)
    for start in range(0, len(journeys), 500):
        part = journeys[start : start + 500]
        session.execute(delete(JourneyIdentity).where(JourneyIdentity.journey_id.in_(part)))
        count("journeys", session.execute(delete(Journey).where(Journey.id.in_(part))))
    if ids:
        session.execute(delete(JourneyIdentity).where(_by_ids(JourneyIdentity, ids)))
        count("behaviours", session.execute(delete(Behaviour).where(_by_ids(Behaviour, ids))))
        count("consents", session.execute(delete(Consent).where(_by_ids(Consent, ids))))
        count(
            "orders_anonymised",
            session.execute(
                update(Order).where(_orders(ids)).values(user_id=None, anonymous_id=None)
            ),
        )
    for start in range(0, len(contacts), 500):
        chunk = contacts[start : start + 500]
        count(
            "run_recipients",
            session.execute(delete(RunRecipient).where(RunRecipient.contact_id.in_(chunk))),
        )
        count(
            "sharing_ledger",
            session.execute(delete(SharingRecord).where(SharingRecord.contact_id.in_(chunk))),
        )
        # The dispatcher's store holds their address and the message made for them.
        count("deliveries", session.execute(delete(Delivery).where(Delivery.contact_id.in_(chunk))))
        count(
            "delivery_outcomes_anonymised",
            session.execute(
                update(DeliveryOutcome)
                .where(DeliveryOutcome.contact_id.in_(chunk))
                .values(contact_id="erased")
            ),
        )
        for contact_id in chunk:
            # Reports keep the count of what was sent; nothing says to whom.
            count(
                "dispatches_anonymised",
                session.execute(
                    update(Dispatch)
                    .where(Dispatch.contact_id == contact_id)
                    .values(contact_id=f"erased-{uuid.uuid4().hex[:12]}")
                ),
            )
        count(
            "contact_identities",
            session.execute(delete(ContactIdentity).where(ContactIdentity.lead_id.in_(chunk))),
        )
        session.execute(
            update(Contact).where(Contact.merged_into.in_(chunk)).values(merged_into=None)
        )
        count("contacts", session.execute(delete(Contact).where(Contact.lead_id.in_(chunk))))
    named = identifiers + [Identifier(LEAD_ID, c) for c in contacts]
    queued = [row.id for row in rows_mentioning(session, outbox, "value", named)]
    for start in range(0, len(queued), 500):
        session.execute(delete(outbox).where(outbox.c.id.in_(queued[start : start + 500])))
    counts["outbox"] = len(queued)
    waiting = [row.id for row in rows_mentioning(session, dispatcher_outbox, "value", named)]
    for start in range(0, len(waiting), 500):
        ids_ = waiting[start : start + 500]
        session.execute(delete(dispatcher_outbox).where(dispatcher_outbox.c.id.in_(ids_)))
    counts["dispatcher_outbox"] = len(waiting)
    counts["audit_entries"] = scrub(session, audit_log, [i.value for i in named])
    return erasure_completed(request_id, MEMBER_RETARGETING, counts)


def export(session: Session, event: Envelope) -> Outgoing:
    identifiers = requested_identifiers(event)
    contacts, ids = _who(session, identifiers)
    truncated: list[str] = []

    def rows(name: str, stmt: Any) -> list[dict[str, Any]]:
        found = list(session.scalars(stmt.limit(MAX_ACCESS_ITEMS + 1)))
        if len(found) > MAX_ACCESS_ITEMS:
            truncated.append(name)
        return [
            {c.key: getattr(r, c.key) for c in r.__table__.columns}
            for r in found[:MAX_ACCESS_ITEMS]
        ]

    nothing = Contact.lead_id.is_(None)  # an always-false filter when nobody is known
    data = {
        "contacts": rows("contacts", select(Contact).where(Contact.lead_id.in_(contacts))),
        "identities": rows(
            "identities", select(ContactIdentity).where(ContactIdentity.lead_id.in_(contacts))
        ),
        "orders": rows("orders", select(Order).where(_orders(ids) if ids else nothing)),
        "behaviours": rows(
            "behaviours",
            select(Behaviour)
            .where(_by_ids(Behaviour, ids) if ids else nothing)
            .order_by(Behaviour.at.desc()),
        ),
        "consents": rows(
            "consents",
            select(Consent)
            .where(_by_ids(Consent, ids) if ids else nothing)
            .order_by(Consent.at.desc()),
        ),
        "dispatches": rows(
            "dispatches",
            select(Dispatch).where(Dispatch.contact_id.in_(contacts)).order_by(Dispatch.id.desc()),
        ),
        "deliveries": rows(
            "deliveries",
            select(Delivery)
            .where(Delivery.contact_id.in_(contacts))
            .order_by(Delivery.created_at.desc()),
        ),
        "delivery_outcomes": rows(
            "delivery_outcomes",
            select(DeliveryOutcome).where(DeliveryOutcome.contact_id.in_(contacts)),
        ),
        "sharing_ledger": rows(
            "sharing_ledger",
            select(SharingRecord)
            .where(SharingRecord.contact_id.in_(contacts))
            .order_by(SharingRecord.at.desc()),
        ),
        "journeys": rows(
            "journeys", select(Journey).where(Journey.id.in_(_journeys(session, contacts, ids)))
        ),
    }
    return access_part(event.payload["request_id"], MEMBER_RETARGETING, data, truncated)

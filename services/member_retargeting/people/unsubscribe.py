"""A person leaves the list: what an unsubscribe link (or the mail client's one-click
button) does, in the caller's transaction, at once — the next campaign run already
skips them (reason ``unsubscribed``).

* their marketing consent is withdrawn: a denial under each identifier they are known
  by (so it is their latest decision whichever identifier a later check goes by), and a
  ``consent.changed`` on the privacy topic so lead-scoring keeps it in their history;
* their e-mail is suppressed (by hash, reason ``unsubscribed``): a later consent grant
  from a web form does not put them back on the list without a person deciding so;
* a ``delivery.status`` ``unsubscribed`` for the campaign report.

Pressing twice changes nothing more. A contact merged into another unsubscribes the one
it became; an erased one has nothing left to change.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.member_retargeting.delivery.status import (
    UNSUBSCRIBED,
    delivery_status,
    dispatch_payload,
)
from services.member_retargeting.model.consent import MARKETING, UNSUBSCRIBE_REASON
from services.member_retargeting.models import (
    Consent,
    Contact,
    ContactIdentity,
    Dispatch,
    Suppression,
)
from shared.events import derived_id, new_event
from shared.outbox import Outgoing, insert_ignoring_duplicates
from shared.topics import MEMBER_RETARGETING, PRIVACY

SOURCE = "unsubscribe"
MAX_MERGE_HOPS = 20


def live_contact(session: Session, contact_id: str) -> Contact | None:
    """The contact ``contact_id`` is now (following merges), or None when gone."""
    contact = session.get(Contact, contact_id)
    for _ in range(MAX_MERGE_HOPS):
        if contact is None or contact.merged_into is None:
            return contact
        contact = session.get(Contact, contact.merged_into)
    return None


def unsubscribe(
    session: Session, dispatch_id: str, contact_id: str, now: datetime
) -> list[Outgoing]:
    """Withdraw the person's marketing consent and suppress their e-mail; the events to
    publish. Returns [] when there was nothing left to change."""
    contact = live_contact(session, contact_id)
    if contact is None:
        return []
    out: list[Outgoing] = []
    identities = list(
        session.execute(
            select(ContactIdentity.kind, ContactIdentity.value).where(
                ContactIdentity.lead_id == contact.lead_id
            )
        )
    )
    event_id = derived_id(f"funnel:unsubscribe:{dispatch_id}")
    already = session.scalar(select(Consent.id).where(Consent.event_id == event_id).limit(1))
    if already is None and identities:
        session.add_all(
            Consent(
                kind=kind,
                value=value,
                purpose=MARKETING,
                granted=False,
                at=now,
                event_id=event_id,
                source=SOURCE,
            )
            for kind, value in identities
        )
        out.append(
            Outgoing(
                PRIVACY,
                contact.lead_id,
                new_event(
                    "consent.changed",
                    {
                        "lead_id": contact.lead_id,
                        "purpose": MARKETING,
                        "granted": False,
                        "decided_at": now,
                        "source": SOURCE,
                        "event_id": event_id,
                    },
                    source=MEMBER_RETARGETING,
                    event_id=event_id,
                    occurred_at=now,
                ),
            )
        )
    if contact.email_key:
        session.execute(
            insert_ignoring_duplicates(
                Suppression.__table__,  # type: ignore[arg-type]
                session.get_bind().dialect.name,
            ),
            [
                {
                    "value_hash": contact.email_key,
                    "kind": "email",
                    "reason": UNSUBSCRIBE_REASON,
                    "created_by": SOURCE,
                    "created_at": now,
                }
            ],
        )
    dispatch = session.scalar(select(Dispatch).where(Dispatch.event_id == dispatch_id))
    if dispatch is not None:
        out.append(delivery_status(dispatch_id, dispatch_payload(dispatch), UNSUBSCRIBED, now))
    return out

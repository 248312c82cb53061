"""lead-scoring's part of an erasure (the consumer applies ``privacy.erasure_requested``):
the person's leads — every one the request names, and any now holding one of its
identifiers — go with all they hold: identities, events, points, stage changes, merges
and conflicts that mention them, consent decisions, the lead snapshots still in the
outbox, and access exports about them. Their identifiers are remembered by hash
(``erased_people``), so traffic that still names them — later, or replayed from the
topic's start — is dropped (:func:`shared.privacy.without_erased`).
"""

from __future__ import annotations

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from services.lead_scoring.models import (
    Identity,
    IdentityConflict,
    Lead,
    LeadConsent,
    LeadEvent,
    LeadMerge,
    ScoreEntry,
    StageChange,
    audit_log,
    erased_people,
    outbox,
)
from services.lead_scoring.privacy.requests import forget_requests_of
from shared.audit import scrub
from shared.events import Envelope
from shared.outbox import Outgoing
from shared.privacy import (
    LEAD_ID,
    Identifier,
    erasure_completed,
    remember_erased,
    requested_identifiers,
    rows_mentioning,
)
from shared.topics import LEAD_SCORING


def leads_of(session: Session, identifiers: list[Identifier]) -> list[str]:
    """The leads the identifiers name: by id, and the owners of the others."""
    named = {i.value for i in identifiers if i.kind == LEAD_ID}
    for identifier in identifiers:
        if identifier.kind != LEAD_ID:
            named.update(
                session.scalars(
                    select(Identity.lead_id).where(
                        Identity.kind == identifier.kind, Identity.value == identifier.value
                    )
                )
            )
    return sorted(named)


def erase(session: Session, event: Envelope) -> Outgoing:
    request_id = event.payload["request_id"]
    identifiers = requested_identifiers(event)
    leads = leads_of(session, identifiers)
    counts = {
        "erased_identifiers": remember_erased(session, erased_people, identifiers, request_id)
    }
    for start in range(0, max(len(leads), 1), 500):
        chunk = leads[start : start + 500]
        for name, model in (
            ("lead_events", LeadEvent),
            ("score_entries", ScoreEntry),
            ("stage_changes", StageChange),
            ("consents", LeadConsent),
            ("identities", Identity),
        ):
            result = session.execute(delete(model).where(model.lead_id.in_(chunk)))
            counts[name] = counts.get(name, 0) + int(getattr(result, "rowcount", 0) or 0)
        for name, record, other in (
            ("merges", LeadMerge, LeadMerge.merged_lead_id),
            ("conflicts", IdentityConflict, IdentityConflict.other_lead_id),
        ):
            result = session.execute(
                delete(record).where(or_(record.lead_id.in_(chunk), other.in_(chunk)))
            )
            counts[name] = counts.get(name, 0) + int(getattr(result, "rowcount", 0) or 0)
        # Another lead merged into one of these keeps no pointer to it.
        session.execute(update(Lead).where(Lead.merged_into.in_(chunk)).values(merged_into=None))
        result = session.execute(delete(Lead).where(Lead.id.in_(chunk)))
        counts["leads"] = counts.get("leads", 0) + int(getattr(result, "rowcount", 0) or 0)
    # Conflicts recorded under other leads may still name an identifier of the person.
    for identifier in identifiers:
        if identifier.kind != LEAD_ID:
            session.execute(
                delete(IdentityConflict).where(
                    IdentityConflict.kind == identifier.kind,
                    IdentityConflict.value == identifier.value,
                )
            )
    sent = [row.id for row in rows_mentioning(session, outbox, "value", identifiers)]
    for start in range(0, len(sent), 500):
        session.execute(delete(outbox).where(outbox.c.id.in_(sent[start : start + 500])))
    counts["outbox"] = len(sent)
    counts["access_exports"] = forget_requests_of(session, identifiers)
    named = [i.value for i in identifiers] + leads
    counts["audit_entries"] = scrub(session, audit_log, named)
    return erasure_completed(request_id, LEAD_SCORING, counts)

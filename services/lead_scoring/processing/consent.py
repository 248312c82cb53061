"""Consent per person: every decision an event states (``context.consent.
categoryPreferences`` on any call, identify traits — read by :mod:`shared.consent`) is
kept under the person's lead with its event; when it changes what the person's latest
decision for a purpose is, a ``consent.changed`` event goes out on the privacy topic.

A decision older than the latest one held (events arrive out of order) is kept in the
history but changes nothing. The latest decisions of the leads a batch touches are read
once per lead and kept on the store for the rest of the batch.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from services.lead_scoring.models import Lead, LeadConsent
from services.lead_scoring.processing.lead_rows import LeadState
from services.lead_scoring.processing.store import LeadStore
from shared.consent import decisions
from shared.events import Envelope, new_event
from shared.outbox import Outgoing
from shared.topics import LEAD_SCORING, PRIVACY

Latest = dict[str, tuple[bool, datetime]]


def record_consent(event: Envelope, lead: LeadState, store: LeadStore) -> list[Outgoing]:
    """Keep the event's decisions under ``lead``; ``consent.changed`` for each change."""
    traits = event.payload.get("traits") if event.type == "identify" else None
    stated = decisions(event.context, traits if isinstance(traits, dict) else None)
    if not stated:
        return []
    latest = _latest(store, lead.id)
    out: list[Outgoing] = []
    at = event.effective_at
    for purpose, granted in sorted(stated.items()):
        store.keep(
            LeadConsent,
            {
                "lead_id": lead.id,
                "purpose": purpose,
                "granted": granted,
                "decided_at": at,
                "event_id": event.event_id,
                "source": event.source,
            },
        )
        held = latest.get(purpose)
        if held is not None and held[1] > at:
            continue  # an older decision, arriving late
        latest[purpose] = (granted, at)
        if held is None or held[0] != granted:
            out.append(_changed(lead.id, purpose, granted, at, event))
    return out


def _latest(store: LeadStore, lead_id: str) -> Latest:
    cache = store.consent_latest
    if lead_id not in cache:
        store.flush()
        newest = (
            select(LeadConsent.purpose, func.max(LeadConsent.decided_at).label("at"))
            .where(LeadConsent.lead_id == lead_id)
            .group_by(LeadConsent.purpose)
            .subquery()
        )
        rows = store.session.execute(
            select(LeadConsent.purpose, LeadConsent.granted, LeadConsent.decided_at)
            .join(
                newest,
                (newest.c.purpose == LeadConsent.purpose) & (newest.c.at == LeadConsent.decided_at),
            )
            .where(LeadConsent.lead_id == lead_id)
        ).all()
        found: Latest = {}
        for purpose, granted, at in rows:
            # A grant and a denial at the same instant: the denial holds.
            if purpose not in found or not granted:
                found[purpose] = (granted, at)
        cache[lead_id] = found
    return cache[lead_id]


def _changed(lead_id: str, purpose: str, granted: bool, at: datetime, event: Envelope) -> Outgoing:
    payload: dict[str, Any] = {
        "lead_id": lead_id,
        "purpose": purpose,
        "granted": granted,
        "decided_at": at,
        "source": event.source,
        "event_id": event.event_id,
    }
    envelope = new_event(
        "consent.changed",
        payload,
        source=LEAD_SCORING,
        event_id=f"consent-{event.event_id}-{lead_id}-{purpose}"[:128],
        occurred_at=at,
    )
    return Outgoing(PRIVACY, lead_id, envelope)


MAX_MERGE_HOPS = 20


def record_announced(session: Any, event: Envelope) -> bool:
    """Keep a decision another service announced (``consent.changed``) under the lead it
    names, or the lead that one was merged into; False when no such lead is left (erased,
    or never known here). Nothing is announced again: it is on the topic already."""
    lead = session.get(Lead, event.payload["lead_id"])
    for _ in range(MAX_MERGE_HOPS):
        if lead is None or lead.merged_into is None:
            break
        lead = session.get(Lead, lead.merged_into)
    if lead is None or lead.merged_into is not None:
        return False
    p = event.payload
    session.add(
        LeadConsent(
            lead_id=lead.id,
            purpose=p["purpose"],
            granted=p["granted"],
            decided_at=p["decided_at"],
            event_id=str(p.get("event_id") or event.event_id)[:128],
            source=str(p.get("source") or event.source)[:200],
        )
    )
    return True


def consent_history(
    store_session: Any, lead_ids: list[str], limit: int = 500
) -> list[dict[str, Any]]:
    """The decisions kept for these leads, newest first (for the API and access exports)."""
    rows = store_session.scalars(
        select(LeadConsent)
        .where(LeadConsent.lead_id.in_(lead_ids))
        .order_by(LeadConsent.decided_at.desc(), LeadConsent.id.desc())
        .limit(limit)
    )
    return [
        {
            "purpose": r.purpose,
            "granted": r.granted,
            "decided_at": r.decided_at,
            "event_id": r.event_id,
            "source": r.source,
        }
        for r in rows
    ]

"""SLA escalation, a timer of the consumer process: each newly overdue MQL is marked and
one ``lead.sla_breached`` is published for it (once per MQL period: becoming MQL again
starts a new period). A lead whose escalation fails alone is marked anyway (so it is not
retried forever) and reported as a dead letter.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from services.lead_scoring.handoff.sla import overdue_query
from services.lead_scoring.models import Lead, outbox
from services.lead_scoring.processing.lead_events import (
    derived_event_id,
    enqueue_dead_letter,
    lead_event,
    snapshot,
)
from services.lead_scoring.processing.store import LeadStore
from shared.db import utcnow
from shared.outbox import Outgoing, enqueue
from shared.runner import apply_isolated, database_check, timer_dead_letter
from shared.topics import LEAD_SCORING


def escalate_overdue(
    session: Session,
    now: datetime,
    sla_hours: float,
    limit: int = 500,
    *,
    check_infrastructure: Callable[[Session], None] = database_check,
) -> list[Outgoing]:
    """Mark up to ``limit`` newly overdue MQLs; returns their ``lead.sla_breached``."""
    store = LeadStore(session)
    out: list[Outgoing] = []
    stmt = overdue_query(now, sla_hours).where(Lead.sla_breached_at.is_(None)).limit(limit)
    leads = list(session.scalars(stmt.with_for_update()))

    def escalate(some: Sequence[Lead]) -> None:
        events = [_breach_event(store, lead, now, sla_hours) for lead in some]
        store.flush()
        out.extend(events)

    for lead, error in apply_isolated(
        session, leads, escalate, check_infrastructure=check_infrastructure
    ):
        lead.sla_breached_at = now
        enqueue_dead_letter(
            session,
            timer_dead_letter("sla", LEAD_SCORING, error, key=lead.id, item={"lead_id": lead.id}),
        )
    store.flush()
    return out


def _breach_event(store: LeadStore, lead: Lead, now: datetime, sla_hours: float) -> Outgoing:
    lead.sla_breached_at = now
    assert lead.mql_at is not None
    return lead_event(
        "lead.sla_breached",
        {
            "lead": snapshot(store, lead),
            "mql_at": lead.mql_at,
            "sla_hours": sla_hours,
            "owner_id": lead.owner_id,
        },
        lead,
        event_id=derived_event_id(f"sla:{lead.id}", lead.mql_at.isoformat()),
        occurred_at=now,
    )


def escalate(
    sessions: sessionmaker,
    sla_hours: float,
    *,
    check_infrastructure: Callable[[Session], None] = database_check,
) -> int:
    """The timer: mark overdue MQLs and queue one escalation event each."""
    with sessions.begin() as session:
        outgoing = escalate_overdue(
            session, utcnow(), sla_hours, check_infrastructure=check_infrastructure
        )
        enqueue(session, outbox, outgoing)
    return len(outgoing)

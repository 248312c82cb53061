"""The sales handoff: routing new MQLs, accept/reject with reasons, explicit stage moves,
and the follow-up SLA. Runs in the caller's transaction (API request or consumer batch);
returns the ``lead.*`` events to publish through the outbox.

Failure modes: :class:`HandoffError` for a move the lead's stage does not allow (the API
answers 409) or an unknown lead/rep (404).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.lead_scoring.models import Lead, Rep
from services.lead_scoring.publishing import (
    derived_event_id,
    enqueue_dead_letter,
    lead_event,
    snapshot,
)
from services.lead_scoring.routing import RepView, choose_rep
from services.lead_scoring.store import LeadStore
from shared.events import STAGES
from shared.outbox import Outgoing
from shared.runner import apply_isolated, database_check, timer_dead_letter
from shared.topics import LEAD_SCORING

# Why sales sends a lead back, and where it goes: recycled leads are nurtured and can
# qualify again; disqualified ones never come back automatically.
REJECTION_CODES: dict[str, str] = {
    "bad_timing": "recycled",
    "no_budget": "recycled",
    "no_authority": "recycled",
    "no_response": "recycled",
    "needs_nurturing": "recycled",
    "not_a_fit": "disqualified",
    "competitor": "disqualified",
    "duplicate": "disqualified",
    "spam": "disqualified",
    "student_or_job_seeker": "disqualified",
}


@dataclass
class HandoffError(Exception):
    status: int
    message: str


def _lead(session: Session, lead_id: str) -> Lead:
    lead = session.scalar(select(Lead).where(Lead.id == lead_id).with_for_update())
    if lead is None or lead.merged_into:
        raise HandoffError(404, f"no lead {lead_id!r}")
    return lead


def actor_name(session: Session, rep_id: int | None) -> str:
    if rep_id is None:
        return "sales"
    rep = session.get(Rep, rep_id)
    if rep is None:
        raise HandoffError(404, f"no rep {rep_id}")
    return f"rep:{rep.id}:{rep.name}"


def _stage_event(
    store: LeadStore,
    lead: Lead,
    from_stage: str,
    reason: str,
    actor: str,
    reason_code: str | None,
    now: datetime,
) -> Outgoing:
    return lead_event(
        "lead.stage_changed",
        {
            "lead": snapshot(store, lead),
            "from_stage": from_stage,
            "to_stage": lead.stage,
            "reason": reason,
            "changed_by": actor,
            "reason_code": reason_code,
        },
        lead,
        event_id=uuid.uuid4().hex,
        occurred_at=now,
    )


def move(
    session: Session,
    lead_id: str,
    to_stage: str,
    reason: str,
    *,
    actor: str,
    now: datetime,
    reason_code: str | None = None,
    allowed_from: tuple[str, ...] | None = None,
) -> list[Outgoing]:
    """An explicit sales move, forwards or backwards; stored with who and why."""
    if to_stage not in STAGES:
        raise HandoffError(422, f"unknown stage {to_stage!r}")
    store = LeadStore(session)
    lead = _lead(session, lead_id)
    if lead.stage == to_stage:
        raise HandoffError(409, f"lead is already {to_stage}")
    if allowed_from is not None and lead.stage not in allowed_from:
        raise HandoffError(409, f"lead is {lead.stage}; this needs {' or '.join(allowed_from)}")
    from_stage = store.change_stage(lead, to_stage, reason, actor, at=now, reason_code=reason_code)
    session.flush()
    return [_stage_event(store, lead, from_stage, reason, actor, reason_code, now)]


def accept(
    session: Session, lead_id: str, *, actor: str, note: str | None, now: datetime
) -> list[Outgoing]:
    reason = "accepted by sales" + (f": {note}" if note else "")
    return move(session, lead_id, "sql", reason, actor=actor, now=now, allowed_from=("mql",))


def reject(
    session: Session, lead_id: str, reason_code: str, *, actor: str, note: str | None, now: datetime
) -> list[Outgoing]:
    to_stage = REJECTION_CODES[reason_code]
    reason = f"rejected by sales ({reason_code})" + (f": {note}" if note else "")
    return move(
        session,
        lead_id,
        to_stage,
        reason,
        actor=actor,
        now=now,
        reason_code=reason_code,
        allowed_from=("mql", "sql"),
    )


def assign_if_unowned(
    session: Session, store: LeadStore, lead: Lead, *, cause_id: str, now: datetime
) -> Outgoing | None:
    """Route an MQL without owner; never reassigns a lead that has one."""
    if lead.owner_id is not None:
        return None
    reps = [
        RepView(
            r.id, r.name, r.available, tuple(r.countries), tuple(r.industries), r.last_assigned_at
        )
        for r in session.scalars(select(Rep).where(Rep.available.is_(True)))
    ]
    choice = choose_rep(lead.traits, lead.account_traits, reps)
    if choice is None:
        return None
    lead.owner_id, lead.assigned_at = choice.rep_id, now
    rep = session.get(Rep, choice.rep_id)
    assert rep is not None
    rep.last_assigned_at = now
    session.flush()
    return lead_event(
        "lead.assigned",
        {
            "lead": snapshot(store, lead),
            "owner_id": rep.id,
            "owner_name": rep.name,
            "reason": choice.reason,
        },
        lead,
        event_id=derived_event_id(cause_id, "assigned"),
        occurred_at=now,
    )


def overdue_query(now: datetime, sla_hours: float):
    """MQLs neither accepted nor rejected within the SLA, oldest first."""
    cutoff = now - timedelta(hours=sla_hours)
    return (
        select(Lead)
        .where(Lead.stage == "mql", Lead.merged_into.is_(None), Lead.mql_at < cutoff)
        .order_by(Lead.mql_at)
    )


def escalate_overdue(
    session: Session,
    now: datetime,
    sla_hours: float,
    limit: int = 500,
    *,
    check_infrastructure: Callable[[Session], None] = database_check,
) -> list[Outgoing]:
    """Mark newly overdue MQLs and publish one ``lead.sla_breached`` each (once per MQL
    period: becoming MQL again starts a new period). A lead whose escalation fails alone
    is marked anyway (so it is not retried forever) and reported as a dead letter."""
    store = LeadStore(session)
    out: list[Outgoing] = []
    stmt = overdue_query(now, sla_hours).where(Lead.sla_breached_at.is_(None)).limit(limit)
    leads = list(session.scalars(stmt.with_for_update()))

    def escalate(some: Sequence[Lead]) -> None:
        events = [_breach_event(store, lead, now, sla_hours) for lead in some]
        session.flush()
        out.extend(events)

    for lead, error in apply_isolated(
        session, leads, escalate, check_infrastructure=check_infrastructure
    ):
        lead.sla_breached_at = now
        enqueue_dead_letter(
            session,
            timer_dead_letter("sla", LEAD_SCORING, error, key=lead.id, item={"lead_id": lead.id}),
        )
    session.flush()
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

"""What sales does to a lead: accept (→ SQL), reject with a reason code (→ recycled or
disqualified), or move it to any stage with a reason; recorded with who and why.

Each action runs in the caller's transaction and returns the ``lead.*`` events to publish;
:func:`perform` runs one in its own transaction with its events queued in the outbox —
the API and the pages both act through it.

Failure modes: :class:`HandoffError` for a move the lead's stage does not allow (409), an
unknown lead or rep (404), or an unknown stage (422).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.lead_scoring.models import Lead, Rep, outbox
from services.lead_scoring.processing.lead_events import lead_event, snapshot
from services.lead_scoring.processing.store import LeadStore
from shared.events import STAGES
from shared.outbox import Outgoing, enqueue

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
    """The rep acting with their own token (``rep:<id>:<name>``), or "sales"."""
    if rep_id is None:
        return "sales"
    rep = session.get(Rep, rep_id)
    if rep is None:
        raise HandoffError(404, f"no rep {rep_id}")
    return f"rep:{rep.id}:{rep.name}"


def shared_token_actor(session: Session, rep_id: int | None) -> str:
    """Someone holding the shared sales token, working a rep's queue: recorded as the
    shared token, never as the rep (anyone holding it could pick any rep)."""
    if rep_id is None:
        return "sales"
    return f"sales token for {actor_name(session, rep_id)}"


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
    store.flush()
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


Action = Callable[[Session, str], list[Outgoing]]
"""A sales action on one lead: a session and the lead id in, events to publish out."""


def perform(sessions: sessionmaker, lead_id: str, action: Action) -> None:
    """Run ``action`` and queue its events, in one transaction. Raises
    :class:`HandoffError` (nothing is written then)."""
    with sessions.begin() as session:
        enqueue(session, outbox, action(session, lead_id))

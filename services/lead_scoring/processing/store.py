"""Lead state in the database, shared by every writer (the consumer's batches, sales
actions, rescoring, jobs). Runs inside the caller's transaction; never commits.

:class:`LeadStore` keeps the history rows it adds in memory and writes them in bulk
(row-by-row ORM writes made the consumer ~8x slower; see ``make bench``); the consumer's
unit of work for one poll batch extends it with reads up front and holds its leads as
plain rows written with Core statements (:class:`.batch.TrafficBatch`,
:mod:`.lead_rows`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, delete, insert, select, update
from sqlalchemy.orm import Session

from services.lead_scoring.model.identity import Conflict
from services.lead_scoring.model.lifecycle import RANK, Transition, automatic_transition
from services.lead_scoring.models import (
    Base,
    Identity,
    IdentityConflict,
    LeadConsent,
    LeadEvent,
    LeadMerge,
    ScoreEntry,
    StageChange,
)
from services.lead_scoring.processing.identities import IdentityKey
from services.lead_scoring.processing.lead_rows import LeadState
from shared.db import utcnow
from shared.events import Envelope
from shared.identity import ANONYMOUS_ID
from shared.limits import (
    MAX_ACTOR_LENGTH,
    MAX_ANONYMOUS_IDS,
    MAX_REASON_LENGTH,
    capped_traits,
    truncate,
)


class LeadStore:
    """Lead state every writer shares, in the caller's transaction.

    History rows (identities, events, awards, stage changes) wait in memory and are
    written with one INSERT per table by :meth:`flush`; the leads themselves are ORM
    objects written by the session's flush (:class:`.batch.TrafficBatch` adds its plain
    rows, see :mod:`.lead_rows`); methods take either kind
    (:data:`.lead_rows.LeadState`). Anything that must query what was written (a merge,
    an identity lookup) flushes first. Callers flush before their transaction ends
    (:func:`.handoff.actions.perform` and the runner's handlers do)."""

    HISTORY = (Identity, LeadEvent, ScoreEntry, StageChange, IdentityConflict, LeadConsent)

    def __init__(self, session: Session) -> None:
        self.session = session
        self._pending: dict[type[Base], list[dict[str, Any]]] = {m: [] for m in self.HISTORY}
        # Each touched lead's latest consent per purpose (see ..processing.consent).
        self.consent_latest: dict[str, dict[str, tuple[bool, datetime]]] = {}

    def _insert(self, model: type[Base], row: dict[str, Any]) -> None:
        """Keep one history row for :meth:`flush`."""
        self._pending[model].append(row)

    def keep(self, model: type[Base], row: dict[str, Any]) -> None:
        """Keep one history row of one of :attr:`HISTORY`'s tables for :meth:`flush`."""
        self._insert(model, row)

    def flush(self) -> None:
        """Write the leads (ORM flush: new ones first, for the foreign keys), then one
        INSERT per table of the rows kept, in the order they were added."""
        self.session.flush()
        for model, rows in self._pending.items():
            if rows:
                self.session.execute(insert(cast(Table, model.__table__)), rows)
                rows.clear()

    def identities_of(self, lead_id: str) -> list[IdentityKey]:
        self.flush()
        rows = self.session.execute(
            select(Identity.kind, Identity.value).where(Identity.lead_id == lead_id)
        ).all()
        return sorted((r.kind, r.value) for r in rows)

    def merge(
        self,
        survivor: LeadState,
        merged: LeadState,
        reason: str,
        *,
        event: Envelope | None = None,
    ) -> list[IdentityKey]:
        """Move ``merged``'s whole history to ``survivor``; nothing is deleted but
        duplicate one-time awards (kept once, the earliest) and, past the cap, the oldest
        anonymous ids (returned: those browsers are strangers again). The merge is
        recorded with the event that caused it and what ``merged`` held (a split gives
        that back)."""
        self.flush()
        held = self.identities_of(merged.id)
        for model in self.HISTORY:
            self.session.execute(
                update(model).where(model.lead_id == merged.id).values(lead_id=survivor.id)
            )
        if RANK.get(merged.stage, -1) > RANK.get(survivor.stage, -1):
            survivor.stage = merged.stage
        survivor.email = survivor.email or merged.email
        survivor.user_id = survivor.user_id or merged.user_id
        survivor.traits = capped_traits(merged.traits, survivor.traits)
        survivor.account_id = survivor.account_id or merged.account_id
        survivor.account_traits = capped_traits(merged.account_traits, survivor.account_traits)
        merged.merged_into = survivor.id
        merged.score = 0
        self.session.add(
            LeadMerge(
                lead_id=survivor.id,
                merged_lead_id=merged.id,
                reason=truncate(reason, MAX_REASON_LENGTH),
                event_id=event.event_id if event else None,
                source=event.source if event else None,
                merged_identities=[list(key) for key in held],
            )
        )
        self.session.flush()
        return self._trim_anonymous_ids(survivor.id)

    def move_identity(self, key: IdentityKey, to_lead: LeadState) -> None:
        """Give ``key`` to ``to_lead`` (an identifier that follows the latest person)."""
        self.flush()
        self.session.execute(
            update(Identity)
            .where(Identity.kind == key[0], Identity.value == key[1])
            .values(lead_id=to_lead.id)
        )

    def add_conflict(self, lead: LeadState, conflict: Conflict, event: Envelope) -> None:
        """Record an identity conflict on the lead the event went to."""
        self._insert(
            IdentityConflict,
            {
                "lead_id": lead.id,
                "other_lead_id": conflict.other_lead,
                "kind": conflict.key[0],
                "value": conflict.key[1],
                "reason": truncate(conflict.reason, MAX_REASON_LENGTH),
                "moved": conflict.moved,
                "event_id": event.event_id,
                "source": event.source,
                "at": event.effective_at,
            },
        )

    def _trim_anonymous_ids(self, lead_id: str) -> list[IdentityKey]:
        """Let go of the oldest anonymous ids past :data:`MAX_ANONYMOUS_IDS`."""
        extra = self.session.scalars(
            select(Identity.value)
            .where(Identity.lead_id == lead_id, Identity.kind == ANONYMOUS_ID)
            .order_by(Identity.created_at.desc(), Identity.value.desc())
            .offset(MAX_ANONYMOUS_IDS)
        ).all()
        if extra:
            self.session.execute(
                delete(Identity).where(
                    Identity.kind == ANONYMOUS_ID, Identity.value.in_(list(extra))
                )
            )
        return [(ANONYMOUS_ID, value) for value in extra]

    def advance(
        self,
        lead: LeadState,
        *,
        mql_threshold: int,
        changed_by: str,
        purchased: bool = False,
        earned_points: int = 0,
        at: datetime | None = None,
    ) -> list[tuple[str, Transition]]:
        """Apply every automatic forward move the lead's facts justify (one event can move
        subscriber → lead → MQL); returns ``(from_stage, transition)`` per move."""
        moves: list[tuple[str, Transition]] = []
        while True:
            # The purchase and the new points are this event's: they count for its first
            # move only (a customer does not become a customer again).
            step = automatic_transition(
                lead.stage,
                known=lead.email is not None,
                score=lead.score,
                mql_threshold=mql_threshold,
                purchased=purchased and not moves,
                earned_points=earned_points if not moves else 0,
            )
            if step is None:
                return moves
            from_stage = self.change_stage(lead, step.to_stage, step.reason, changed_by, at=at)
            moves.append((from_stage, step))

    def change_stage(
        self,
        lead: LeadState,
        to_stage: str,
        reason: str,
        changed_by: str,
        *,
        at: datetime | None = None,
        reason_code: str | None = None,
    ) -> str:
        """Record the move with who and why; returns the stage it left. Becoming MQL
        starts the follow-up SLA clock afresh."""
        at = at or utcnow()
        reason = truncate(reason, MAX_REASON_LENGTH)
        changed_by = truncate(changed_by, MAX_ACTOR_LENGTH)
        from_stage = lead.stage
        lead.stage = to_stage
        lead.updated_at = at
        if to_stage == "mql":
            lead.mql_at, lead.sla_breached_at = at, None
        self._insert(
            StageChange,
            {
                "lead_id": lead.id,
                "from_stage": from_stage,
                "to_stage": to_stage,
                "reason": reason,
                "reason_code": reason_code,
                "changed_by": changed_by,
                "changed_at": at,
            },
        )
        return from_stage

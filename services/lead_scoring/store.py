"""Reads and writes of lead state for the handler. Runs inside the caller's transaction;
never commits."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import select, tuple_, update
from sqlalchemy.orm import Session

from services.lead_scoring.engagement import DEFAULT_HALF_LIFE_DAYS, raw_increment
from services.lead_scoring.history import history_fields
from services.lead_scoring.lifecycle import RANK, Transition, automatic_transition
from services.lead_scoring.models import (
    Identity,
    Lead,
    LeadEvent,
    LeadMerge,
    ScoreEntry,
    StageChange,
)
from services.lead_scoring.scoring import Award
from shared.db import utcnow
from shared.events import Envelope

IdentityKey = tuple[str, str]


class LeadStore:
    def __init__(self, session: Session) -> None:
        self.session = session

    def leads_for(self, identities: Iterable[IdentityKey]) -> list[Lead]:
        """Distinct live leads owning any of the identities, oldest first."""
        keys = list(identities)
        if not keys:
            return []
        # One query for all identifiers (row values work on SQLite and PostgreSQL).
        ids = set(
            self.session.scalars(
                select(Identity.lead_id).where(tuple_(Identity.kind, Identity.value).in_(keys))
            )
        )
        if not ids:
            return []
        # Locked: the sales API changes leads too (SQLite's IMMEDIATE lock covers it there).
        leads = self.session.scalars(select(Lead).where(Lead.id.in_(ids)).with_for_update()).all()
        return sorted(leads, key=lambda lead: (lead.created_at, lead.id))

    def create_lead(self, at: datetime, rules_version: int = 0) -> Lead:
        lead = Lead(
            id=uuid.uuid4().hex,
            stage="subscriber",
            score=0,
            traits={},
            account_traits={},
            fit_score=0,
            fit_grade="D",
            engagement_raw=0.0,
            intent={},
            rules_version=rules_version,
            created_at=at,
            updated_at=at,
        )
        self.session.add(lead)
        self.session.flush()
        return lead

    def attach(self, lead: Lead, identities: Iterable[IdentityKey]) -> None:
        for kind, value in identities:
            existing = self.session.get(Identity, (kind, value))
            if existing is None:
                self.session.add(Identity(kind=kind, value=value, lead_id=lead.id))
            elif existing.lead_id != lead.id:
                existing.lead_id = lead.id
        self.session.flush()

    def identities_of(self, lead_id: str) -> list[IdentityKey]:
        rows = self.session.execute(
            select(Identity.kind, Identity.value).where(Identity.lead_id == lead_id)
        ).all()
        return sorted((r.kind, r.value) for r in rows)

    def merge(self, survivor: Lead, merged: Lead, reason: str) -> None:
        """Move ``merged``'s whole history to ``survivor``; nothing is deleted but
        duplicate one-time awards (kept once, the earliest)."""
        for model in (Identity, LeadEvent, ScoreEntry, StageChange):
            self.session.execute(
                update(model).where(model.lead_id == merged.id).values(lead_id=survivor.id)
            )
        if RANK.get(merged.stage, -1) > RANK.get(survivor.stage, -1):
            survivor.stage = merged.stage
        survivor.email = survivor.email or merged.email
        survivor.user_id = survivor.user_id or merged.user_id
        survivor.traits = {**merged.traits, **survivor.traits}
        survivor.account_id = survivor.account_id or merged.account_id
        survivor.account_traits = {**merged.account_traits, **survivor.account_traits}
        merged.merged_into = survivor.id
        merged.score = 0
        self.session.add(LeadMerge(lead_id=survivor.id, merged_lead_id=merged.id, reason=reason))
        self.session.flush()

    def award_history(self, lead_id: str) -> dict[str, list[datetime]]:
        """Rule id → when it awarded this lead (for one-time rules and period caps)."""
        history: dict[str, list[datetime]] = {}
        rows = self.session.execute(
            select(ScoreEntry.rule_id, ScoreEntry.occurred_at).where(ScoreEntry.lead_id == lead_id)
        )
        for rule_id, at in rows:
            history.setdefault(rule_id, []).append(at)
        return history

    def add_event(self, lead: Lead, event: Envelope) -> None:
        """Keep the event in the lead's history, with what rescoring needs."""
        self.session.add(LeadEvent(lead_id=lead.id, **history_fields(event)))
        occurred_at = event.occurred_at
        if lead.last_event_at is None or occurred_at > lead.last_event_at:
            lead.last_event_at = occurred_at

    def add_awards(
        self,
        lead: Lead,
        awards: Sequence[Award],
        occurred_at: datetime,
        half_life_days: float = DEFAULT_HALF_LIFE_DAYS,
    ) -> None:
        for award in awards:
            self.session.add(
                ScoreEntry(
                    lead_id=lead.id,
                    event_id=award.event_id,
                    rule_id=award.rule_id,
                    points=award.points,
                    reason=award.reason,
                    occurred_at=occurred_at,
                )
            )
        earned = sum(a.points for a in awards)
        lead.score += earned
        lead.engagement_raw += raw_increment(earned, occurred_at, half_life_days)
        intent = dict(lead.intent)
        for award in awards:
            if award.rule_id.startswith("intent:"):
                topic = award.rule_id.removeprefix("intent:")
                intent[topic] = intent.get(topic, 0) + award.points
        lead.intent = intent

    def advance(
        self,
        lead: Lead,
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
        step = automatic_transition(
            lead.stage,
            known=lead.email is not None,
            score=lead.score,
            mql_threshold=mql_threshold,
            purchased=purchased,
            earned_points=earned_points,
        )
        while step is not None:
            from_stage = self.change_stage(lead, step.to_stage, step.reason, changed_by, at=at)
            moves.append((from_stage, step))
            step = automatic_transition(
                lead.stage,
                known=lead.email is not None,
                score=lead.score,
                mql_threshold=mql_threshold,
                purchased=False,
            )
        return moves

    def change_stage(
        self,
        lead: Lead,
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
        from_stage = lead.stage
        lead.stage = to_stage
        lead.updated_at = at
        if to_stage == "mql":
            lead.mql_at, lead.sla_breached_at = at, None
        self.session.add(
            StageChange(
                lead_id=lead.id,
                from_stage=from_stage,
                to_stage=to_stage,
                reason=reason,
                reason_code=reason_code,
                changed_by=changed_by,
                changed_at=at,
            )
        )
        return from_stage

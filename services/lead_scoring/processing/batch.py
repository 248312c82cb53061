"""The consumer's unit of work for one poll batch of traffic events.

:class:`TrafficBatch` reads the batch's identities, leads (locked) and award histories
with a few queries up front (:meth:`~TrafficBatch.preload`), answers lookups from memory,
and writes its rows in bulk at the end (:meth:`LeadStore.flush`). Where rows change behind
its back (a merge, a rescore) it forgets what it read (:meth:`~TrafficBatch.forget`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, tuple_
from sqlalchemy.orm import Session

from services.lead_scoring.model.engagement import DEFAULT_HALF_LIFE_DAYS, raw_increment
from services.lead_scoring.model.fit import LOWEST_GRADE
from services.lead_scoring.model.history import history_fields
from services.lead_scoring.model.intent import with_intent
from services.lead_scoring.model.rules import Award
from services.lead_scoring.model.scoring import HistoryScope
from services.lead_scoring.models import Identity, Lead, LeadEvent, ScoreEntry
from services.lead_scoring.processing.identities import IdentityKey
from services.lead_scoring.processing.store import LeadStore
from shared.db import utcnow
from shared.events import Envelope
from shared.identity import ANONYMOUS_ID
from shared.limits import MAX_ANONYMOUS_IDS

# Keys per IN (...) list: far below SQLite's and PostgreSQL's bound-parameter limits.
CHUNK = 1000


def _chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


class TrafficBatch(LeadStore):
    """Lead state for one batch of traffic events (see the module docstring).

    ``preload`` reads what the batch's events name; lookups outside it fall back to a
    query. Leads are ORM objects (locked FOR UPDATE when read), changed in place and
    written by the session's flush; identities, events, awards and stage changes wait in
    memory until :meth:`flush`. Nothing is committed here.
    """

    def __init__(self, session: Session, scope: HistoryScope, since: datetime) -> None:
        super().__init__(session)
        self.scope = scope
        # Period-capped awards older than this cannot matter to any event of the batch.
        self.since = since - timedelta(days=scope.longest_period_days)
        self._owner: dict[IdentityKey, str | None] = {}
        self._leads: dict[str, Lead] = {}
        self._identities: dict[str, list[IdentityKey]] = {}
        self._history: dict[str, dict[str, list[datetime]]] = {}

    def preload(self, identities: Iterable[IdentityKey]) -> None:
        """Read the owners of ``identities``, their leads (locked), the leads' other
        identities and their award histories: four queries for the whole batch."""
        keys = [k for k in dict.fromkeys(identities) if k not in self._owner]
        for key in keys:
            self._owner[key] = None
        for chunk in _chunks(keys):
            for kind, value, lead_id in self.session.execute(
                select(Identity.kind, Identity.value, Identity.lead_id).where(
                    tuple_(Identity.kind, Identity.value).in_(chunk)
                )
            ):
                self._owner[(kind, value)] = lead_id
        self._load({lead_id for lead_id in self._owner.values() if lead_id is not None})

    def _load(self, lead_ids: Iterable[str]) -> None:
        wanted = sorted(set(lead_ids) - self._leads.keys())
        for chunk in _chunks(wanted):
            # Locked: the sales API changes leads too (SQLite's IMMEDIATE lock covers it).
            for lead in self.session.scalars(
                select(Lead).where(Lead.id.in_(chunk)).with_for_update()
            ):
                self._leads[lead.id] = lead
                self._identities[lead.id] = []
                self._history[lead.id] = {}
            for lead_id, kind, value in self.session.execute(
                select(Identity.lead_id, Identity.kind, Identity.value).where(
                    Identity.lead_id.in_(chunk)
                )
            ):
                self._identities[lead_id].append((kind, value))
            scope = self.scope
            for lead_id, rule_id, at in self.session.execute(
                select(ScoreEntry.lead_id, ScoreEntry.rule_id, ScoreEntry.occurred_at)
                .where(
                    ScoreEntry.lead_id.in_(chunk),
                    or_(
                        ScoreEntry.rule_id.in_(scope.lifetime),
                        and_(
                            ScoreEntry.rule_id.in_(scope.periodic),
                            ScoreEntry.occurred_at >= self.since,
                        ),
                    ),
                )
                .order_by(ScoreEntry.id)
            ):
                self._history[lead_id].setdefault(rule_id, []).append(at)

    def owners(self, keys: Iterable[IdentityKey]) -> dict[IdentityKey, str | None]:
        """Which lead owns each identifier now (None: nobody)."""
        keys = list(keys)
        if any(k not in self._owner for k in keys):
            self.preload(keys)
        return {k: self._owner[k] for k in keys}

    def holdings(self, lead_ids: Iterable[str]) -> dict[str, list[IdentityKey]]:
        """What each lead holds now."""
        return {lead_id: list(self._identities[lead_id]) for lead_id in lead_ids}

    def lead(self, lead_id: str) -> Lead:
        return self._leads[lead_id]

    def create_lead(self, at: datetime, rules_version: int = 0) -> Lead:
        lead = Lead(
            id=uuid.uuid4().hex,
            stage="subscriber",
            score=0,
            traits={},
            account_traits={},
            fit_score=0,
            fit_grade=LOWEST_GRADE,
            engagement_raw=0.0,
            intent={},
            rules_version=rules_version,
            version=0,
            created_at=at,
            updated_at=at,
        )
        self.session.add(lead)
        self._leads[lead.id] = lead
        self._identities[lead.id] = []
        self._history[lead.id] = {}
        return lead

    def attach(self, lead: Lead, identities: Iterable[IdentityKey], event: Envelope) -> None:
        """Make ``lead`` the owner of each identity, recording the event and source that
        linked it. Identities owned by another lead are merged or moved first, so here
        they are new or already ``lead``'s. A lead keeps at most
        :data:`MAX_ANONYMOUS_IDS` anonymous ids: past that the oldest give way."""
        known = self._identities[lead.id]
        for key in identities:
            owner = self._owner.get(key)
            if owner == lead.id:
                continue
            if owner is not None:
                raise RuntimeError(f"{key} belongs to lead {owner}: merge or move it first")
            self._insert(
                Identity,
                {
                    "kind": key[0],
                    "value": key[1],
                    "lead_id": lead.id,
                    "created_at": utcnow(),
                    "event_id": event.event_id,
                    "source": event.source,
                },
            )
            self._owner[key] = lead.id
            known.append(key)
        if sum(1 for kind, _ in known if kind == ANONYMOUS_ID) > MAX_ANONYMOUS_IDS:
            self.flush()
            self._release(self._trim_anonymous_ids(lead.id), lead.id)

    def move_identity(self, key: IdentityKey, to_lead: Lead) -> None:
        super().move_identity(key, to_lead)
        previous = self._owner.get(key)
        if previous is not None and previous in self._identities:
            self._identities[previous] = [k for k in self._identities[previous] if k != key]
        self._owner[key] = to_lead.id
        self._identities[to_lead.id].append(key)

    def _release(self, keys: Iterable[IdentityKey], lead_id: str) -> None:
        gone = set(keys)
        for key in gone:
            self._owner[key] = None
        self._identities[lead_id] = [k for k in self._identities[lead_id] if k not in gone]

    def identities_of(self, lead_id: str) -> list[IdentityKey]:
        if lead_id not in self._identities:
            return super().identities_of(lead_id)
        return sorted(self._identities[lead_id])

    def merge(
        self, survivor: Lead, merged: Lead, reason: str, *, event: Envelope | None = None
    ) -> list[IdentityKey]:
        released = super().merge(survivor, merged, reason, event=event)
        for key, owner in self._owner.items():
            if owner == merged.id:
                self._owner[key] = survivor.id
        self._identities[survivor.id] = [
            *self._identities.get(survivor.id, []),
            *self._identities.pop(merged.id, []),
        ]
        self._release(released, survivor.id)
        self.forget(survivor.id, merged.id)
        return released

    def forget(self, *lead_ids: str) -> None:
        """Award histories of these leads are read again when next needed."""
        for lead_id in lead_ids:
            self._history.pop(lead_id, None)

    def rescope(self, scope: HistoryScope) -> None:
        """The rule set changed under this batch: what matters of the past may differ."""
        if scope != self.scope:
            self.since += timedelta(days=self.scope.longest_period_days - scope.longest_period_days)
            self.scope = scope
            self._history.clear()

    def award_history(self, lead_id: str) -> dict[str, list[datetime]]:
        """Rule id → when it awarded this lead, for the rules in the history scope
        (the only ones whose past matters)."""
        if lead_id not in self._history:
            self.flush()
            self._leads.pop(lead_id, None)
            self._load([lead_id])
        return self._history[lead_id]

    def add_event(
        self,
        lead: Lead,
        event: Envelope,
        identities: Sequence[IdentityKey] = (),
        *,
        excluded: str | None = None,
    ) -> None:
        """Keep the event in the lead's history, with what rescoring and a split need;
        ``excluded`` (why) keeps it without counting it."""
        row = {"lead_id": lead.id, **history_fields(event, identities), "excluded": excluded}
        self._insert(LeadEvent, row)
        if excluded:
            return
        if lead.last_event_at is None or event.effective_at > lead.last_event_at:
            lead.last_event_at = event.effective_at

    def add_awards(
        self,
        lead: Lead,
        awards: Sequence[Award],
        occurred_at: datetime,
        half_life_days: float = DEFAULT_HALF_LIFE_DAYS,
    ) -> None:
        if not awards:
            return
        history = self.award_history(lead.id)
        for award in awards:
            self._insert(
                ScoreEntry,
                {
                    "lead_id": lead.id,
                    "event_id": award.event_id,
                    "rule_id": award.rule_id,
                    "points": award.points,
                    "reason": award.reason,
                    "occurred_at": occurred_at,
                },
            )
            history.setdefault(award.rule_id, []).append(occurred_at)
        earned = sum(a.points for a in awards)
        lead.score += earned
        lead.engagement_raw += raw_increment(earned, occurred_at, half_life_days)
        intent = with_intent(lead.intent, awards)
        if intent != lead.intent:
            lead.intent = intent

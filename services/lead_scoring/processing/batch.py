"""The consumer's unit of work for one poll batch of traffic events.

:class:`TrafficBatch` reads the batch's identities, leads (locked) and award histories
with a few queries up front (:meth:`~TrafficBatch.preload`), answers lookups from memory,
and writes its rows in bulk at the end (:meth:`~TrafficBatch.flush`): leads with Core
statements (:mod:`.lead_rows`), history with one INSERT per table. Where rows change
behind its back (a merge, a rescore) it forgets what it read
(:meth:`~TrafficBatch.forget`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, tuple_
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from services.lead_scoring.model.engagement import DEFAULT_HALF_LIFE_DAYS, raw_increment
from services.lead_scoring.model.fit import LOWEST_GRADE
from services.lead_scoring.model.history import history_fields
from services.lead_scoring.model.intent import with_intent
from services.lead_scoring.model.rules import Award
from services.lead_scoring.model.scoring import HistoryScope
from services.lead_scoring.models import Identity, Lead, LeadEvent, ScoreEntry
from services.lead_scoring.processing.identities import IdentityKey
from services.lead_scoring.processing.lead_rows import (
    COLUMNS,
    LeadRow,
    LeadState,
    read_rows,
    write_rows,
)
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
    query. Leads are :class:`.lead_rows.LeadRow` objects (locked FOR UPDATE when read),
    changed in place and written by :meth:`flush`; a lead the session already holds as
    an ORM ``Lead`` (a split's) is used instead, brought up to the row just locked, and
    written by the session's flush.
    Identities, events, awards and stage changes wait in memory until :meth:`flush`.
    Nothing is committed here.
    """

    def __init__(self, session: Session, scope: HistoryScope, since: datetime) -> None:
        super().__init__(session)
        self.scope = scope
        # Period-capped awards older than this cannot matter to any event of the batch.
        self.since = since - timedelta(days=scope.longest_period_days)
        self._owner: dict[IdentityKey, str | None] = {}
        self._leads: dict[str, LeadState] = {}
        self._rows: dict[str, LeadRow] = {}  # the leads :meth:`flush` writes
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
        owned = {lead_id for lead_id in self._owner.values() if lead_id is not None}
        self._load(owned - self._leads.keys())

    def _load(self, lead_ids: Iterable[str]) -> None:
        """Read (and lock) the leads not held yet, then every given lead's identities and
        award history afresh: the caller has flushed what it wrote of them."""
        wanted = sorted(set(lead_ids))
        unread = [lead_id for lead_id in wanted if lead_id not in self._leads]
        if unread:
            # ORM leads the session holds (a split's) are used, not read again beside
            # them; pending ones must be in the database to be locked and found.
            self.session.flush()
        for chunk in _chunks(unread):
            # Locked: the sales API changes leads too (SQLite's IMMEDIATE lock covers it).
            for row in read_rows(self.session, chunk):
                held = self.session.identity_map.get(Session.identity_key(Lead, row.id))
                if held is None:
                    self._leads[row.id] = self._rows[row.id] = row
                    continue
                # Brought up to the row just locked: a held lead the ORM did not see
                # change (a Core write rolled back with a savepoint) may be stale.
                for name in COLUMNS:
                    set_committed_value(held, name, getattr(row, name))
                self._leads[row.id] = held
        wanted = [lead_id for lead_id in wanted if lead_id in self._leads]
        for lead_id in wanted:
            self._identities[lead_id] = []
            self._history[lead_id] = {}
        for chunk in _chunks(wanted):
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

    def lead(self, lead_id: str) -> LeadState:
        return self._leads[lead_id]

    def create_lead(self, at: datetime, rules_version: int = 0) -> LeadRow:
        lead = LeadRow(
            {
                "id": uuid.uuid4().hex,
                "stage": "subscriber",
                "score": 0,
                "fit_score": 0,
                "fit_grade": LOWEST_GRADE,
                "engagement_raw": 0.0,
                "intent": {},
                "rules_version": rules_version,
                "email": None,
                "user_id": None,
                "traits": {},
                "account_id": None,
                "account_traits": {},
                "merged_into": None,
                "owner_id": None,
                "assigned_at": None,
                "mql_at": None,
                "sla_breached_at": None,
                "created_at": at,
                "updated_at": at,
                "last_event_at": None,
                "version": 0,
            },
            stored=False,
        )
        self._leads[lead.id] = self._rows[lead.id] = lead
        self._identities[lead.id] = []
        self._history[lead.id] = {}
        return lead

    def flush(self) -> None:
        """Write the batch's leads (new and changed, :func:`.lead_rows.write_rows`), then
        what the session and the history wait to write (:meth:`LeadStore.flush`)."""
        write_rows(self.session, self._rows.values())
        super().flush()

    def attach(self, lead: LeadState, identities: Iterable[IdentityKey], event: Envelope) -> None:
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

    def move_identity(self, key: IdentityKey, to_lead: LeadState) -> None:
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
        self,
        survivor: LeadState,
        merged: LeadState,
        reason: str,
        *,
        event: Envelope | None = None,
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
            self._load([lead_id])
        return self._history[lead_id]

    def add_event(
        self,
        lead: LeadState,
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
        lead: LeadState,
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

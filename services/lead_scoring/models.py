"""lead-scoring's tables (the ORM models; events and HTTP schemas are separate things).

Where person data lives, for erasure and access: ``leads`` (email, user id, traits,
account traits), ``identities`` (every identifier), ``lead_events`` (the identifiers,
traits, properties and page context of each event), ``lead_merges`` (the identifiers that
linked two leads), ``identity_conflicts`` (identifiers), ``stage_changes`` (sales notes in
reasons), ``lead_consents`` (decisions), ``outbox`` (lead snapshots until pruned) and
``privacy_answers`` (access exports, for a day). Erasure (:mod:`.privacy`) deletes all of
it for the person and remembers them in ``erased_people`` by hash only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.lead_scoring.model.fit import LOWEST_GRADE
from shared.accounts import accounts_table
from shared.audit import audit_table
from shared.db import (
    NAMING_CONVENTION,
    BigIntPK,
    UTCDateTime,
    outbox_table,
    processed_events_table,
    utcnow,
)
from shared.privacy import erased_table


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


metadata = Base.metadata
processed_events = processed_events_table(metadata)
outbox = outbox_table(metadata)
# People who sign in as themselves (admin, marketing) and what they changed.
accounts = accounts_table(metadata)
audit_log = audit_table(metadata)


class Lead(Base):
    __tablename__ = "leads"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    stage: Mapped[str] = mapped_column(String(20), default="subscriber", index=True)
    score: Mapped[int] = mapped_column(default=0, index=True)
    fit_score: Mapped[int] = mapped_column(default=0)
    fit_grade: Mapped[str] = mapped_column(String(1), default=LOWEST_GRADE, index=True)
    # Decayed engagement, stored so that ORDER BY ranks by engagement now (see engagement.py).
    engagement_raw: Mapped[float] = mapped_column(default=0.0, index=True)
    intent: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    # The rule-set version this lead's points were computed with (0: built-in defaults).
    rules_version: Mapped[int] = mapped_column(default=0, index=True)
    email: Mapped[str | None] = mapped_column(String(320))
    user_id: Mapped[str | None] = mapped_column(String(200))
    traits: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    account_id: Mapped[str | None] = mapped_column(String(200))
    account_traits: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    merged_into: Mapped[str | None] = mapped_column(String(32), index=True)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("reps.id"), index=True)
    assigned_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    mql_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    sla_breached_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_event_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Counts the snapshots published of this lead: consumers ignore one older than the
    # one they hold (lead events of one lead can reach them out of order).
    version: Mapped[int] = mapped_column(default=0)


class Rep(Base):
    """A salesperson who can own leads. Empty territory lists mean "anywhere"."""

    __tablename__ = "reps"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320), unique=True)
    available: Mapped[bool] = mapped_column(default=True)
    countries: Mapped[list[str]] = mapped_column(JSON, default=list)
    industries: Mapped[list[str]] = mapped_column(JSON, default=list)
    last_assigned_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class RepToken(Base):
    """A rep's personal sign-in token (API and pages), stored as its SHA-256 only: the
    token itself is shown once. One per rep; issuing a new one replaces it."""

    __tablename__ = "rep_tokens"

    rep_id: Mapped[int] = mapped_column(ForeignKey("reps.id"), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Identity(Base):
    """One identifier of a person (``user_id``, ``email``, ``anonymous_id``,
    ``external:<type>``), owned by one lead, with where it came from."""

    __tablename__ = "identities"

    kind: Mapped[str] = mapped_column(String(40), primary_key=True)
    value: Mapped[str] = mapped_column(String(320), primary_key=True)
    lead_id: Mapped[str] = mapped_column(ForeignKey("leads.id"), index=True)
    # When it was first linked to a lead: the oldest anonymous ids give way past the cap.
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # The event that linked it, and that event's source.
    event_id: Mapped[str | None] = mapped_column(String(128))
    source: Mapped[str | None] = mapped_column(String(200))


class LeadEvent(Base):
    __tablename__ = "lead_events"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    lead_id: Mapped[str] = mapped_column(ForeignKey("leads.id"))
    event_id: Mapped[str] = mapped_column(String(128))
    type: Mapped[str] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(200))
    path: Mapped[str | None] = mapped_column(String(2000))
    # Enough of the event to evaluate any rule again (rescoring): its properties and page
    # context. Person data: erased with the lead.
    properties: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    page_context: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Enough to apply the event again (a split rebuilds both leads from their events): the
    # identifiers it named, its source, and what identify / group / alias said.
    source: Mapped[str | None] = mapped_column(String(200))
    identities: Mapped[list[list[str]]] = mapped_column(JSON, default=list)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Set aside by a split: it named both people, so it counts for neither.
    excluded: Mapped[str | None] = mapped_column(String(200))

    __table_args__ = (Index("ix_lead_events_lead_time", "lead_id", "occurred_at"),)


class _LeadRecord:
    """A numbered record kept under one lead (an award, a stage change, a merge)."""

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    lead_id: Mapped[str] = mapped_column(ForeignKey("leads.id"), index=True)


class ScoreEntry(_LeadRecord, Base):
    """One award: which rule gave how many points for which event."""

    __tablename__ = "score_entries"

    event_id: Mapped[str] = mapped_column(String(128))
    rule_id: Mapped[str] = mapped_column(String(100))
    points: Mapped[int]
    reason: Mapped[str] = mapped_column(String(500))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())


class StageChange(_LeadRecord, Base):
    """A move between lifecycle stages, with who and why."""

    __tablename__ = "stage_changes"

    from_stage: Mapped[str | None] = mapped_column(String(20))
    to_stage: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(String(500))
    reason_code: Mapped[str | None] = mapped_column(String(40), index=True)
    changed_by: Mapped[str] = mapped_column(String(100))
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class LeadMerge(_LeadRecord, Base):
    """A record that ``merged_lead_id``'s history now belongs to ``lead_id``, and why:
    the event and source that linked them and what the merged lead held then (what a
    split gives back)."""

    __tablename__ = "lead_merges"

    merged_lead_id: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(String(500))
    merged_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    event_id: Mapped[str | None] = mapped_column(String(128))
    source: Mapped[str | None] = mapped_column(String(200))
    merged_identities: Mapped[list[list[str]]] = mapped_column(JSON, default=list)
    split_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    split_by: Mapped[str | None] = mapped_column(String(100))
    split_reason: Mapped[str | None] = mapped_column(String(500))


class IdentityConflict(_LeadRecord, Base):
    """An event named an identifier the identity rules let another lead keep (or that
    would break a limit): recorded, never silently resolved. ``lead_id`` is where the
    event went; ``moved`` says the identifier went with it (it follows the latest)."""

    __tablename__ = "identity_conflicts"

    other_lead_id: Mapped[str | None] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(40))
    value: Mapped[str] = mapped_column(String(320))
    reason: Mapped[str] = mapped_column(String(500))
    moved: Mapped[bool] = mapped_column(default=False)
    event_id: Mapped[str] = mapped_column(String(128))
    source: Mapped[str | None] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class RuleSet(Base):
    """A version of the scoring model (rules, intent taxonomy, fit criteria, thresholds).
    The highest version is active; older ones stay for audit."""

    __tablename__ = "rule_sets"

    version: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    note: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class IdentityRuleSet(Base):
    """A version of the identity rules (limits and priorities per identifier kind). The
    highest version is active; older ones stay for audit."""

    __tablename__ = "identity_rule_sets"

    version: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    note: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class RescoreJob(Base):
    """Rescoring every lead for a new rule-set version, with progress."""

    __tablename__ = "rescore_jobs"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    version: Mapped[int] = mapped_column(index=True)
    total: Mapped[int] = mapped_column(default=0)
    done: Mapped[int] = mapped_column(default=0)
    # Leads that could not be rescored (each reported as a dead letter).
    failed: Mapped[int] = mapped_column(default=0)
    status: Mapped[str] = mapped_column(String(20), default="pending")  # pending|running|done
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


# Privacy: consent per person with its history, erased people (hashes only), and the
# erasure and access requests this service coordinates with every service's answer.

erased_people = erased_table(metadata)


class LeadConsent(_LeadRecord, Base):
    """One consent decision of the person, as an event stated it (every one is kept; the
    latest per purpose counts). Moves with the lead on a merge."""

    __tablename__ = "lead_consents"

    purpose: Mapped[str] = mapped_column(String(20))
    granted: Mapped[bool]
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime())
    event_id: Mapped[str] = mapped_column(String(128))
    source: Mapped[str | None] = mapped_column(String(200))


class PrivacyRequest(Base):
    """An erasure or an access request. ``identifiers`` name the person while the request
    runs; once every service has answered an erasure they are replaced by their keys
    (hashes), so the request itself keeps no trace of who was forgotten."""

    __tablename__ = "privacy_requests"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))  # erasure | access
    identifiers: Mapped[list[dict[str, str]]] = mapped_column(JSON)
    requested_by: Mapped[str] = mapped_column(String(200))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class PrivacyAnswer(Base):
    """One service's answer to a request: what it erased (counts) or holds (``data``,
    person data: pruned a day after the request, and erased with the person)."""

    __tablename__ = "privacy_answers"

    request_id: Mapped[str] = mapped_column(ForeignKey("privacy_requests.id"), primary_key=True)
    service: Mapped[str] = mapped_column(String(40), primary_key=True)
    counts: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    truncated: Mapped[list[str]] = mapped_column(JSON, default=list)
    answered_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

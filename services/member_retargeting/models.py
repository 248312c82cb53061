"""member-retargeting's tables (ORM models; events and HTTP schemas are separate things).

Where person data lives, for erasure and access: ``contacts`` (e-mail, user id, phone,
names, traits), ``contact_identities`` (ids), ``orders`` and ``behaviours`` (what a person
did, by their ids), ``consents`` (decisions by their ids), ``dispatches`` and
``sharing_ledger`` (who received what of them), ``outbox`` (dispatches until pruned),
``deliveries`` (the dispatcher's store: each dispatch with its address and message, until
pruned) and ``delivery_outcomes`` (what became of each dispatch, by contact id).
``journeys`` and ``journey_identities`` (when and from where each person came, by their
ids; the funnel report's projection). ``suppressions`` hold hashes only. Erasure
(:mod:`.privacy`) deletes all of it for the person (orders and dispatches are
anonymised: campaign reports keep their counts).

What a person did is kept by the identifiers it arrived with (traffic can come before the
lead events that name its person); queries reach a contact's through
``contact_identities``.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    ForeignKey,
    Index,
    MetaData,
    Numeric,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

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

Money = Numeric(14, 2)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


metadata = Base.metadata
processed_events = processed_events_table(metadata)
outbox = outbox_table(metadata)
# The dispatcher's (a process of its own, with its own relay: one relay per outbox).
dispatcher_outbox = outbox_table(metadata, name="dispatcher_outbox")
# People erased, by hash only: their lead and traffic events are dropped (see .privacy).
erased_people = erased_table(metadata)
# People who sign in as themselves (admin, marketing) and what they changed.
accounts = accounts_table(metadata)
audit_log = audit_table(metadata)


class Contact(Base):
    """A person as lead-scoring last described them, and as a member once they bought."""

    __tablename__ = "contacts"

    lead_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    stage: Mapped[str] = mapped_column(String(20), index=True)
    score: Mapped[int] = mapped_column(default=0)
    email: Mapped[str | None] = mapped_column(String(320))
    user_id: Mapped[str | None] = mapped_column(String(200))
    phone: Mapped[str | None] = mapped_column(String(64))
    # Suppression keys (see model.suppression): whom the list says never to contact.
    email_key: Mapped[str | None] = mapped_column(String(64), index=True)
    phone_key: Mapped[str | None] = mapped_column(String(64), index=True)
    first_name: Mapped[str | None] = mapped_column(String(200))
    last_name: Mapped[str | None] = mapped_column(String(200))
    country: Mapped[str | None] = mapped_column(String(64))
    # The country case-folded in Python, so segments match it alike on every database
    # (SQLite's lower() knows ASCII only).
    country_key: Mapped[str | None] = mapped_column(String(64), index=True)
    timezone: Mapped[str | None] = mapped_column(String(64))
    traits: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    intent: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    merged_into: Mapped[str | None] = mapped_column(String(32))
    # Indexed for the funnel's precursors report (people known, and buyers, in a window).
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    # The version of the lead snapshot this contact was last updated from.
    lead_version: Mapped[int | None] = mapped_column()
    # Membership: from the first completed order.
    is_member: Mapped[bool] = mapped_column(default=False, index=True)
    member_since: Mapped[datetime | None] = mapped_column(UTCDateTime())
    tier: Mapped[str | None] = mapped_column(String(40), index=True)
    tier_since: Mapped[datetime | None] = mapped_column(UTCDateTime())
    orders_count: Mapped[int] = mapped_column(default=0)
    revenue_total: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    first_order_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    last_order_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    rfm_recency: Mapped[int | None] = mapped_column()
    rfm_frequency: Mapped[int | None] = mapped_column()
    rfm_monetary: Mapped[int | None] = mapped_column()
    rfm_group: Mapped[str | None] = mapped_column(String(40), index=True)


class ContactIdentity(Base):
    """Maps the ids traffic carries (user id, anonymous id) to a contact."""

    __tablename__ = "contact_identities"

    kind: Mapped[str] = mapped_column(String(40), primary_key=True)
    value: Mapped[str] = mapped_column(String(320), primary_key=True)
    lead_id: Mapped[str] = mapped_column(String(32), index=True)


class Order(Base):
    """A completed order seen on traffic, kept by the ids it arrived with."""

    __tablename__ = "orders"

    event_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    user_id: Mapped[str | None] = mapped_column(String(200), index=True)
    anonymous_id: Mapped[str | None] = mapped_column(String(200), index=True)
    revenue: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    currency: Mapped[str | None] = mapped_column(String(3))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    source: Mapped[str | None] = mapped_column(String(200))


class Behaviour(Base):
    """One thing a person did, by the identifier it arrived with: a tracked event, and
    for Segment's e-commerce events one row per product (its id and category)."""

    __tablename__ = "behaviours"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(40))
    value: Mapped[str] = mapped_column(String(320))
    event: Mapped[str] = mapped_column(String(200))
    product_id: Mapped[str | None] = mapped_column(String(200))
    product_name: Mapped[str | None] = mapped_column(String(200))
    category: Mapped[str | None] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    event_id: Mapped[str] = mapped_column(String(128))

    __table_args__ = (
        Index("ix_behaviours_who", "kind", "value", "event", "at"),
        Index("ix_behaviours_event_time", "event", "at"),
        Index("ix_behaviours_event_id", "event_id"),
    )


class Journey(Base):
    """One person's way through the funnel, the analytics projection (:mod:`.reports.funnel`):
    when they were first seen and from where (first touch: channel, engine, landing page,
    campaign), and when they first reached each lead stage. Built from traffic before
    the person is a lead (by the ids it arrived with) and from lead events after;
    ``lead_id`` names the lead once one does. A journey folded into another (a merge, or
    an anonymous visit found to be a lead's) keeps ``merged_into`` and counts no more."""

    __tablename__ = "journeys"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    lead_id: Mapped[str | None] = mapped_column(String(32), unique=True)
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    # First touch: from the earliest page seen (else the earliest event).
    touch_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    channel: Mapped[str] = mapped_column(String(40), default="direct")
    engine: Mapped[str | None] = mapped_column(String(200))
    landing_page: Mapped[str | None] = mapped_column(String(200))
    campaign: Mapped[str | None] = mapped_column(String(200))
    # The furthest funnel stage reached (model.funnel.RANK), and when each was first.
    reached: Mapped[int] = mapped_column(default=0)
    lead_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    mql_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    sql_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    customer_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    merged_into: Mapped[int | None] = mapped_column(BigIntPK, index=True)

    __table_args__ = (
        # The daily prune's scan (processing.journeys.prune): journeys no lead's, oldest
        # first, without walking past every lead's journey first.
        Index(
            "ix_journeys_anonymous_first_seen",
            "first_seen_at",
            postgresql_where=text("lead_id IS NULL"),
            sqlite_where=text("lead_id IS NULL"),
        ),
    )


class JourneyIdentity(Base):
    """Which journey an id traffic carries (user id, anonymous id) belongs to."""

    __tablename__ = "journey_identities"

    kind: Mapped[str] = mapped_column(String(40), primary_key=True)
    value: Mapped[str] = mapped_column(String(320), primary_key=True)
    journey_id: Mapped[int] = mapped_column(BigIntPK, index=True)


class Consent(Base):
    """A decision about one purpose (analytics, marketing, advertising), by the identifier
    it arrived with; every decision is kept, the latest counts."""

    __tablename__ = "consents"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(40))
    value: Mapped[str] = mapped_column(String(320))
    purpose: Mapped[str] = mapped_column(String(20))
    granted: Mapped[bool]
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    event_id: Mapped[str] = mapped_column(String(128))
    source: Mapped[str | None] = mapped_column(String(200))

    __table_args__ = (Index("ix_consents_who", "kind", "value", "purpose", "at"),)


class Suppression(Base):
    """Never contact this person, whatever a segment says: kept by the SHA-256 of a
    normalised e-mail or phone (never the plain value)."""

    __tablename__ = "suppressions"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    value_hash: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(String(500))
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Segment(Base):
    """A saved segment rule (see :mod:`.model.segments`); built-ins are seeded."""

    __tablename__ = "segments"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    rule: Mapped[dict[str, Any]] = mapped_column(JSON)
    builtin: Mapped[bool] = mapped_column(default=False)
    description: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Campaign(Base):
    __tablename__ = "campaigns"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    # The segment rule (the rule language; a saved segment's rule is copied in).
    segment: Mapped[dict[str, Any]] = mapped_column(JSON)
    channel: Mapped[str] = mapped_column(String(20))
    message: Mapped[dict[str, Any]] = mapped_column(JSON)
    # transactional campaigns are exempt from frequency caps (never from consent).
    kind: Mapped[str] = mapped_column(String(20), default="marketing")
    # When to run: now (a trigger), once at ``schedule_at``, or on an event after a delay.
    schedule_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # none_as_null: "no trigger" is SQL NULL (queries test IS NOT NULL), not JSON null.
    trigger: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    attribution_days: Mapped[int] = mapped_column(default=7)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class CampaignRun(Base):
    """One sending of a campaign: a background job in chunks, with progress. Started with
    an idempotency key: the same key never starts a second run."""

    __tablename__ = "campaign_runs"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), index=True)
    trigger: Mapped[str] = mapped_column(String(40))
    idempotency_key: Mapped[str] = mapped_column(String(200))
    # pending → running → done; or failed (a chunk failed again and again: ``error``).
    status: Mapped[str] = mapped_column(String(20), default="pending", index=True)
    error: Mapped[str | None] = mapped_column(String(500))
    audience_size: Mapped[int] = mapped_column(default=0)
    processed: Mapped[int] = mapped_column(default=0)
    requested_by: Mapped[str] = mapped_column(String(100), default="system")
    triggered_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (UniqueConstraint("campaign_id", "idempotency_key"),)


class RunRecipient(Base):
    """The audience of a run, fixed when it starts (the segment can change meanwhile)."""

    __tablename__ = "run_recipients"

    run_id: Mapped[int] = mapped_column(ForeignKey("campaign_runs.id"), primary_key=True)
    contact_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    # 1..N in the order the run handles them (its ``processed`` is how far it got).
    position: Mapped[int]

    __table_args__ = (Index("ix_run_recipients_order", "run_id", "position"),)


class Dispatch(Base):
    """What a run did for one recipient: ``sent`` (with the event id published) or
    ``skipped`` (with the reason). Unique per run and person: never twice."""

    __tablename__ = "dispatches"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("campaign_runs.id"))
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), index=True)
    contact_id: Mapped[str] = mapped_column(String(32), index=True)
    status: Mapped[str] = mapped_column(String(20), default="sent")
    skip_reason: Mapped[str | None] = mapped_column(String(40))
    channel: Mapped[str | None] = mapped_column(String(20))
    # The campaign's kind: only marketing messages count toward the frequency cap.
    kind: Mapped[str] = mapped_column(String(20), default="marketing")
    event_id: Mapped[str | None] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    # A purchase until then counts as this dispatch's conversion (the attribution window).
    attributed_until: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (UniqueConstraint("run_id", "contact_id"),)


class Delivery(Base):
    """The dispatcher's own store (:mod:`.delivery`): one row per dispatch it sends,
    keyed by the dispatch's event id, so a dispatch handed over twice is sent once.
    ``status``: ``queued`` (due at ``next_attempt_at``), ``sending`` (claimed by
    ``claim`` at ``claimed_at``), then ``sent``, ``failed`` or ``bounced``. ``payload``
    is the ``campaign.dispatch`` payload (the address and the rendered message): erased
    with the person, pruned past the retention."""

    __tablename__ = "deliveries"

    dispatch_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    channel: Mapped[str] = mapped_column(String(20))
    campaign_id: Mapped[int] = mapped_column()
    run_id: Mapped[int] = mapped_column()
    contact_id: Mapped[str] = mapped_column(String(32), index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(20), default="queued")
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    claim: Mapped[str | None] = mapped_column(String(32), index=True)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)

    __table_args__ = (Index("ix_deliveries_due", "channel", "status", "next_attempt_at"),)


class DeliveryOutcome(Base):
    """What became of one dispatch, from ``delivery.status`` events: the delivery status
    (``sent``, ``failed``, ``bounced``; the newest wins), when a provider's receipt said
    it was delivered, and the first open, click and unsubscribe. Campaign reports count
    these."""

    __tablename__ = "delivery_outcomes"

    dispatch_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    campaign_id: Mapped[int] = mapped_column(index=True)
    contact_id: Mapped[str] = mapped_column(String(32), index=True)
    channel: Mapped[str | None] = mapped_column(String(20))
    status: Mapped[str | None] = mapped_column(String(20))
    status_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    detail: Mapped[str | None] = mapped_column(String(500))
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    clicked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    clicks: Mapped[int] = mapped_column(default=0)
    unsubscribed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class AudienceExport(Base):
    """A hashed audience sent to an ads platform: who asked, when, where, what."""

    __tablename__ = "audience_exports"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    platform: Mapped[str] = mapped_column(String(20))
    segment: Mapped[dict[str, Any]] = mapped_column(JSON)
    fields: Mapped[list[str]] = mapped_column(JSON)
    people: Mapped[int] = mapped_column(default=0)
    # audience.batch events published so far: the next part's number.
    parts: Mapped[int] = mapped_column(default=0)
    requested_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class SharingRecord(Base):
    """Append-only: one person's data went to one destination (a dispatch channel or an
    ads platform), which fields, why, at whose request. Never updated."""

    __tablename__ = "sharing_ledger"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    contact_id: Mapped[str] = mapped_column(String(32), index=True)
    destination: Mapped[str] = mapped_column(String(60))
    fields: Mapped[list[str]] = mapped_column(JSON)
    purpose: Mapped[str] = mapped_column(String(20))
    campaign_id: Mapped[int | None] = mapped_column()
    export_id: Mapped[int | None] = mapped_column()
    requested_by: Mapped[str] = mapped_column(String(100))
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

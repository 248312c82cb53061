"""member-retargeting's tables. Person data (email, ids, traits) lives in ``contacts`` and
``contact_identities`` only, so erasure has two places to look."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, ForeignKey, MetaData, Numeric, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import (
    NAMING_CONVENTION,
    BigIntPK,
    UTCDateTime,
    outbox_table,
    processed_events_table,
    utcnow,
)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


metadata = Base.metadata
processed_events = processed_events_table(metadata)
outbox = outbox_table(metadata)


class Contact(Base):
    """A person as lead-scoring last described them; a member once they bought."""

    __tablename__ = "contacts"

    lead_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    stage: Mapped[str] = mapped_column(String(20), index=True)
    score: Mapped[int] = mapped_column(default=0)
    email: Mapped[str | None] = mapped_column(String(320))
    user_id: Mapped[str | None] = mapped_column(String(200))
    traits: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    is_member: Mapped[bool] = mapped_column(default=False, index=True)
    member_since: Mapped[datetime | None] = mapped_column(UTCDateTime())
    merged_into: Mapped[str | None] = mapped_column(String(32))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # The version of the lead snapshot this contact was last updated from.
    lead_version: Mapped[int | None] = mapped_column()


class ContactIdentity(Base):
    """Maps the ids traffic carries (user id, anonymous id) to a contact."""

    __tablename__ = "contact_identities"

    kind: Mapped[str] = mapped_column(String(20), primary_key=True)
    value: Mapped[str] = mapped_column(String(320), primary_key=True)
    lead_id: Mapped[str] = mapped_column(String(32), index=True)


class Order(Base):
    """A completed order seen on traffic, kept by the ids it arrived with."""

    __tablename__ = "orders"

    event_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    user_id: Mapped[str | None] = mapped_column(String(200), index=True)
    anonymous_id: Mapped[str | None] = mapped_column(String(200), index=True)
    revenue: Mapped[Decimal] = mapped_column(Numeric(14, 2), default=Decimal(0))
    currency: Mapped[str | None] = mapped_column(String(3))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Campaign(Base):
    __tablename__ = "campaigns"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    segment: Mapped[dict[str, Any]] = mapped_column(JSON)
    channel: Mapped[str] = mapped_column(String(20))
    message: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class CampaignRun(Base):
    __tablename__ = "campaign_runs"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), index=True)
    trigger: Mapped[str] = mapped_column(String(20))
    audience_size: Mapped[int]
    triggered_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Dispatch(Base):
    """One recipient of one run; unique, so a run never sends twice to a person."""

    __tablename__ = "dispatches"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("campaign_runs.id"))
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), index=True)
    contact_id: Mapped[str] = mapped_column(String(32))
    event_id: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (UniqueConstraint("run_id", "contact_id"),)

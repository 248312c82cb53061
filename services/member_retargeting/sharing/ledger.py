"""The sharing ledger: append-only, one line each time a person's data went somewhere —
which destination, which fields, for what purpose, at whose request. Never updated, never
deleted except by erasure; marketing can list it per person."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from services.member_retargeting.models import SharingRecord


def record_sharing(
    session: Session,
    contact_id: str,
    *,
    destination: str,
    fields: Sequence[str],
    purpose: str,
    requested_by: str,
    at: datetime,
    campaign_id: int | None = None,
    export_id: int | None = None,
) -> None:
    session.add(
        SharingRecord(
            contact_id=contact_id,
            destination=destination,
            fields=list(fields),
            purpose=purpose,
            campaign_id=campaign_id,
            export_id=export_id,
            requested_by=requested_by,
            at=at,
        )
    )


def record_many(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Ledger lines in bulk (an export's chunk)."""
    if rows:
        session.execute(insert(SharingRecord), list(rows))


def shared_with(session: Session, contact_id: str, limit: int = 200) -> list[SharingRecord]:
    """Where the person's data went, newest first."""
    return list(
        session.scalars(
            select(SharingRecord)
            .where(SharingRecord.contact_id == contact_id)
            .order_by(SharingRecord.at.desc(), SharingRecord.id.desc())
            .limit(limit)
        )
    )

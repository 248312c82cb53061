"""Segments: a small JSON rule compiled to one set-based SQL query over contacts.

``{"members": true|false|null, "stages": [...], "min_score": int}`` — all conditions
must hold; omitted conditions do not filter. Merged-away contacts never match, and a
channel that needs an address (email) only reaches contacts that have one.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, select

from services.member_retargeting.models import Contact

CHANNELS_NEEDING_EMAIL = frozenset({"email"})


def audience_query(segment: dict[str, Any], channel: str) -> Select[Contact]:
    stmt = select(Contact).where(Contact.merged_into.is_(None))
    members = segment.get("members")
    if members is not None:
        stmt = stmt.where(Contact.is_member.is_(bool(members)))
    if segment.get("stages"):
        stmt = stmt.where(Contact.stage.in_(segment["stages"]))
    if segment.get("min_score") is not None:
        stmt = stmt.where(Contact.score >= segment["min_score"])
    if channel in CHANNELS_NEEDING_EMAIL:
        stmt = stmt.where(Contact.email.is_not(None))
    return stmt.order_by(Contact.lead_id)

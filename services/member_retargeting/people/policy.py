"""Who may receive what, decided at send time (never only when a segment is built):

* consent for the purpose the channel serves (:mod:`..model.consent`): the person's
  latest decision across all their identifiers must be a grant — unknown is no;
* not suppressed (by the hash of their e-mail or phone);
* the frequency cap across every marketing campaign: at most ``per_day`` messages a day,
  the day as the person lives it (their ``timezone`` trait, else UTC), and ``per_week``
  in seven days; transactional campaigns are exempt (never from consent), and only
  messages count (e-mail, SMS, WhatsApp, webhook: an ads audience export is no message).

The first two are conditions over ``contacts`` (set-based, for a run's chunk or a whole
export); the cap needs each person's day, so it is computed for a chunk's people.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.orm import Session, aliased

from services.member_retargeting.model.consent import MESSAGE_CHANNELS, UNSUBSCRIBE_REASON
from services.member_retargeting.models import (
    Consent,
    Contact,
    ContactIdentity,
    Dispatch,
    Suppression,
)


def consented(purpose: str) -> ColumnElement[bool]:
    """The contact's latest decision for ``purpose`` (across their identifiers) grants
    it; a grant and a denial at the same moment count as a denial."""

    def latest(granted: bool) -> ColumnElement[datetime]:
        c, ci = aliased(Consent), aliased(ContactIdentity)
        return (
            select(func.max(c.at))
            .join(ci, and_(ci.kind == c.kind, ci.value == c.value))
            .where(ci.lead_id == Contact.lead_id, c.purpose == purpose, c.granted.is_(granted))
            .scalar_subquery()
        )

    granted, denied = latest(True), latest(False)
    return and_(granted.is_not(None), or_(denied.is_(None), granted > denied))


def suppressed() -> ColumnElement[bool]:
    """The contact's e-mail or phone is on the suppression list. Never NULL (so its
    negation keeps the people without an e-mail or a phone)."""
    keys = select(Suppression.value_hash)
    return or_(
        and_(Contact.email_key.is_not(None), Contact.email_key.in_(keys)),
        and_(Contact.phone_key.is_not(None), Contact.phone_key.in_(keys)),
    )


def unsubscribed() -> ColumnElement[bool]:
    """The contact's e-mail was suppressed by their own unsubscribe (a link in one of our
    messages): the reason a report gives for skipping them, before any other."""
    keys = select(Suppression.value_hash).where(Suppression.reason == UNSUBSCRIBE_REASON)
    return and_(Contact.email_key.is_not(None), Contact.email_key.in_(keys))


def over_cap(
    session: Session,
    contacts: Sequence[Contact],
    now: datetime,
    per_day: int,
    per_week: int,
) -> set[str]:
    """The contacts that already had their marketing messages for today (in their own
    time zone) or this week. Only sent messages count (not ads audience exports).

    Two runs checking the same person at once could both see room for one more message:
    the caller locks the contacts first (:func:`..campaigns.runs.work` does)."""
    if not contacts:
        return set()
    sent = session.execute(
        select(Dispatch.contact_id, Dispatch.created_at).where(
            Dispatch.contact_id.in_([c.lead_id for c in contacts]),
            Dispatch.status == "sent",
            Dispatch.kind == "marketing",
            # A message channel (a row without one, which nothing writes now, counts too).
            or_(Dispatch.channel.in_(MESSAGE_CHANNELS), Dispatch.channel.is_(None)),
            Dispatch.created_at >= now - timedelta(days=7),
        )
    ).all()
    by_contact: dict[str, list[datetime]] = {}
    for contact_id, at in sent:
        by_contact.setdefault(contact_id, []).append(at)
    capped = set()
    for contact in contacts:
        times = by_contact.get(contact.lead_id, [])
        zone = _zone(contact.timezone)
        today = now.astimezone(zone).date()
        if len(times) >= per_week or _count_on(times, today, zone) >= per_day:
            capped.add(contact.lead_id)
    return capped


def _count_on(times: Iterable[datetime], day: object, zone: ZoneInfo) -> int:
    return sum(1 for at in times if at.astimezone(zone).date() == day)


def _zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name) if name else ZoneInfo("UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")

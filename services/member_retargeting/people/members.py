"""Members: who bought, their lifetime value, tier and RFM group — and the events that say
when that changes (``member.updated`` on the members topic).

A person's orders are found through their identifiers (an order keeps the user id or
anonymous id it arrived with; :func:`orders_of`). :func:`refresh` brings one contact up
to date after an order or a new picture of the lead: the first completed order enrols a
member; lifetime value and order count are historic; the tier follows
:mod:`..model.tiers`. :func:`score_rfm` ranks every member into quintiles in one
set-based statement and names their groups (:mod:`..model.rfm`); the scheduler runs it
daily, with the tier review that lets rolling-window tiers fall.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Select, and_, case, func, or_, select, update
from sqlalchemy.orm import Session

from services.member_retargeting.model.rfm import GRID
from services.member_retargeting.model.tiers import TierRules, next_tier
from services.member_retargeting.models import Contact, ContactIdentity, Order
from shared.events import new_event
from shared.identity import ANONYMOUS_ID, USER_ID
from shared.outbox import Outgoing
from shared.topics import MEMBER_RETARGETING, MEMBERS


def orders_of(contact_ids: Any) -> Select[str, Decimal, datetime, str]:
    """``(contact_id, revenue, occurred_at, order_id)`` of the contacts' orders: by user
    id, or by anonymous id for an order placed before the person signed in. An order
    belongs to one contact at most (an identifier maps to one)."""
    ci = ContactIdentity
    return (
        select(
            ci.lead_id.label("contact_id"),
            Order.revenue,
            Order.occurred_at,
            Order.event_id.label("order_id"),
        )
        .join(
            Order,
            or_(
                and_(ci.kind == USER_ID, Order.user_id == ci.value),
                and_(
                    ci.kind == ANONYMOUS_ID,
                    Order.user_id.is_(None),
                    Order.anonymous_id == ci.value,
                ),
            ),
        )
        .where(ci.lead_id.in_(contact_ids))
    )


def snapshot(contact: Contact) -> dict[str, Any]:
    rfm = (
        None
        if contact.rfm_recency is None
        else {
            "recency": contact.rfm_recency,
            "frequency": contact.rfm_frequency,
            "monetary": contact.rfm_monetary,
        }
    )
    return {
        "contact_id": contact.lead_id,
        "is_member": contact.is_member,
        "member_since": contact.member_since,
        "tier": contact.tier,
        "tier_since": contact.tier_since,
        "orders": contact.orders_count,
        "revenue": contact.revenue_total,
        "last_order_at": contact.last_order_at,
        "rfm_group": contact.rfm_group,
        "rfm": rfm,
    }


def member_event(contact: Contact, change: str, reason: str, at: datetime) -> Outgoing:
    envelope = new_event(
        "member.updated",
        {"member": snapshot(contact), "change": change, "reason": reason},
        source=MEMBER_RETARGETING,
        occurred_at=at,
        user_id=contact.user_id,
    )
    return Outgoing(MEMBERS, contact.lead_id, envelope)


def refresh(session: Session, contact: Contact, rules: TierRules, now: datetime) -> list[Outgoing]:
    """Bring one contact's membership, value and tier up to date; returns the
    ``member.updated`` events for what changed."""
    orders = orders_of([contact.lead_id]).subquery()
    start = rules.window_start(now)
    in_window = (
        orders.c.revenue
        if start is None
        else case((orders.c.occurred_at >= start, orders.c.revenue), else_=0)
    )
    count, total, first, last, window_spend = session.execute(
        select(
            func.count(),
            func.coalesce(func.sum(orders.c.revenue), 0),
            func.min(orders.c.occurred_at),
            func.max(orders.c.occurred_at),
            func.coalesce(func.sum(in_window), 0),
        ).select_from(orders)
    ).one()
    contact.orders_count, contact.revenue_total = int(count), Decimal(str(total))
    contact.first_order_at, contact.last_order_at = _aware(first), _aware(last)
    out: list[Outgoing] = []
    enrolled = not contact.is_member and (count > 0 or contact.stage == "customer")
    if enrolled:
        contact.is_member = True
        contact.member_since = contact.first_order_at or now
    if contact.is_member:
        move = next_tier(rules, contact.tier, contact.tier_since, Decimal(str(window_spend)), now)
        if move is not None:
            contact.tier, contact.tier_since = move.tier, move.since
            if not enrolled:
                out.append(member_event(contact, "tier", move.reason, now))
    if enrolled:  # after the tier: the first event says which tier the member starts in
        out.append(member_event(contact, "enrolled", "first purchase", now))
    return out


def review_tiers(
    session: Session, rules: TierRules, now: datetime, chunk: int = 1000
) -> list[Outgoing]:
    """Let tiers fall that the window's spend no longer earns once their retention is
    over: every member above the lowest tier who has held it that long, a chunk at a
    time."""
    if len(rules.tiers) < 2:
        return []
    held_before = now - timedelta(days=rules.retention_days)
    out: list[Outgoing] = []
    after = ""
    while True:
        contacts = session.scalars(
            select(Contact)
            .where(
                Contact.is_member.is_(True),
                Contact.merged_into.is_(None),
                Contact.tier != rules.tiers[0].name,
                Contact.tier_since < held_before,
                Contact.lead_id > after,
            )
            .order_by(Contact.lead_id)
            .limit(chunk)
            .with_for_update()
        ).all()
        if not contacts:
            return out
        for contact in contacts:
            out += refresh(session, contact, rules, now)
        after = contacts[-1].lead_id


def score_rfm(session: Session, now: datetime) -> list[Outgoing]:
    """Rank every live member into R, F and M quintiles (5 = most recent, most orders,
    most spent) and name their group, in one statement; returns a ``member.updated``
    for each member whose group changed."""
    ranked = (
        select(
            Contact.lead_id.label("lead_id"),
            # Never ordered (a customer by stage) is the least recent, on every database.
            func.ntile(5)
            .over(order_by=(Contact.last_order_at.asc().nulls_first(), Contact.lead_id))
            .label("r"),
            func.ntile(5).over(order_by=(Contact.orders_count, Contact.lead_id)).label("f"),
            func.ntile(5).over(order_by=(Contact.revenue_total, Contact.lead_id)).label("m"),
        )
        .where(Contact.is_member.is_(True), Contact.merged_into.is_(None))
        .subquery()
    )
    named = case(
        *[
            (and_(ranked.c.r.between(r_low, r_high), ranked.c.f.between(f_low, f_high)), name)
            for name, r_low, r_high, f_low, f_high in GRID
        ],
        else_=GRID[-1][0],
    )
    changed = list(
        session.scalars(
            select(ranked.c.lead_id)
            .join(Contact, Contact.lead_id == ranked.c.lead_id)
            .where(or_(Contact.rfm_group.is_(None), Contact.rfm_group != named))
        )
    )
    session.execute(
        update(Contact)
        .where(Contact.lead_id == ranked.c.lead_id)
        .values(
            rfm_recency=ranked.c.r,
            rfm_frequency=ranked.c.f,
            rfm_monetary=ranked.c.m,
            rfm_group=named,
        )
        .execution_options(synchronize_session=False)
    )
    session.expire_all()
    out: list[Outgoing] = []
    for start in range(0, len(changed), 1000):
        for contact in session.scalars(
            select(Contact).where(Contact.lead_id.in_(changed[start : start + 1000]))
        ):
            out.append(member_event(contact, "rfm_group", f"now {contact.rfm_group}", now))
    return out


def _aware(value: Any) -> datetime | None:
    """Aggregates come back without the column's type on SQLite: give them their zone."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)

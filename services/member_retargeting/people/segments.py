"""Segments compiled to SQL: a parsed rule (:mod:`..model.segments`) becomes one
set-based condition over ``contacts`` — attributes are columns, "did X in the last N days"
is a correlated EXISTS (or COUNT) over ``behaviours`` joined through the contact's
identifiers. No Python loop over people; the database does the work (see ``make bench``:
segments over a million members).

Merged-away contacts never match. :data:`BUILTINS` are the segments every marketer asks
for first; they are seeded as saved segments.
"""

from __future__ import annotations

import logging
import math
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    exists,
    false,
    func,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.orm import Session, aliased

from services.member_retargeting.model.segments import (
    INTENT_PREFIX,
    All,
    AnyOf,
    Attribute,
    Did,
    Not,
    Rule,
    SegmentError,
    parse,
)
from services.member_retargeting.models import Behaviour, Contact, ContactIdentity

log = logging.getLogger(__name__)

COLUMNS: dict[str, Any] = {
    "stage": Contact.stage,
    "score": Contact.score,
    "is_member": Contact.is_member,
    "tier": Contact.tier,
    "rfm_group": Contact.rfm_group,
    "rfm_recency": Contact.rfm_recency,
    "rfm_frequency": Contact.rfm_frequency,
    "rfm_monetary": Contact.rfm_monetary,
    "orders": Contact.orders_count,
    "revenue": Contact.revenue_total,
}

BUILTINS: dict[str, tuple[str, dict[str, Any]]] = {
    "Cart abandoners": (
        "added a product in the last 3 days and did not buy",
        {
            "all": [
                {"event": "Product Added", "within_days": 3},
                {"not": {"event": "Order Completed", "within_days": 3}},
            ]
        },
    ),
    "Lapsed members": (
        "members with no purchase in 90 days",
        {
            "all": [
                {"attribute": "is_member", "op": "eq", "value": True},
                {"attribute": "days_since_last_order", "op": "gte", "value": 90},
            ]
        },
    ),
    "VIPs": (
        "gold members or RFM champions",
        {
            "any": [
                {"attribute": "tier", "op": "eq", "value": "gold"},
                {"attribute": "rfm_group", "op": "eq", "value": "Champions"},
            ]
        },
    ),
    "Hot leads who did not buy": (
        "MQLs and SQLs scoring 50 or more who never ordered",
        {
            "all": [
                {"attribute": "stage", "op": "in", "value": ["mql", "sql"]},
                {"attribute": "score", "op": "gte", "value": 50},
                {"attribute": "is_member", "op": "eq", "value": False},
            ]
        },
    ),
}


def condition(rule: Rule, now: datetime) -> ColumnElement[bool]:
    """The rule as a condition over ``Contact``."""
    if isinstance(rule, All):
        return and_(true(), *(condition(r, now) for r in rule.rules))
    if isinstance(rule, AnyOf):
        return or_(false(), *(condition(r, now) for r in rule.rules))
    if isinstance(rule, Not):
        return not_(condition(rule.rule, now))
    if isinstance(rule, Did):
        return _did(rule, now)
    return _attribute(rule, now)


def audience(rule: Rule, now: datetime) -> Select[str]:
    """The ids of the live contacts the rule matches, in a stable order."""
    return (
        select(Contact.lead_id)
        .where(Contact.merged_into.is_(None), condition(rule, now))
        .order_by(Contact.lead_id)
    )


def count(session: Session, rule: Rule, now: datetime) -> int:
    stmt = (
        select(func.count())
        .select_from(Contact)
        .where(Contact.merged_into.is_(None), condition(rule, now))
    )
    return int(session.scalar(stmt) or 0)


def stored_count(session: Session, document: Any, now: datetime) -> int | None:
    """Who a stored rule matches now; None when it no longer parses (a rule saved by an
    older version) or its query fails: pages and lists show it as broken rather than
    failing. Never raises for the rule's sake; the query runs in a savepoint, so a
    failure leaves the caller's transaction usable (PostgreSQL aborts it otherwise)."""
    try:
        rule = parse(document)
    except SegmentError:
        return None
    try:
        with session.begin_nested():
            return count(session, rule, now)
    except Exception:  # a display number: nothing is lost, the rule is shown as broken
        log.warning("a stored segment rule could not be counted: %.300r", document, exc_info=True)
        return None


def sample(session: Session, rule: Rule, now: datetime, size: int = 10) -> list[Contact]:
    ids = audience(rule, now).limit(size).subquery()
    return list(session.scalars(select(Contact).where(Contact.lead_id.in_(select(ids.c.lead_id)))))


def _attribute(rule: Attribute, now: datetime) -> ColumnElement[bool]:
    name, op, value = rule.name, rule.op, rule.value
    if name == "has_email":
        return Contact.email.is_not(None) if value else Contact.email.is_(None)
    if name == "has_phone":
        return Contact.phone.is_not(None) if value else Contact.phone.is_(None)
    if name == "days_since_last_order":
        return _days_since(op, value, now)
    if name == "country":
        column: Any = Contact.country_key
        value = tuple(v.casefold() for v in value) if isinstance(value, tuple) else value.casefold()
    elif name.startswith(INTENT_PREFIX):
        topic = name.removeprefix(INTENT_PREFIX)
        column = func.coalesce(Contact.intent[topic].as_integer(), 0)
    else:
        column = COLUMNS[name]
    return _compare(column, op, value)


def _compare(column: Any, op: str, value: Any) -> ColumnElement[bool]:
    if op == "in":
        return and_(column.is_not(None), column.in_(value))
    if op == "not_in":
        return or_(column.is_(None), column.not_in(value))
    if op == "ne":
        return or_(column.is_(None), column != value)
    compare = {
        "eq": column.__eq__,
        "gt": column.__gt__,
        "gte": column.__ge__,
        "lt": column.__lt__,
        "lte": column.__le__,
    }[op]
    return and_(column.is_not(None), compare(value))


def _days_since(op: str, days: Any, now: datetime) -> ColumnElement[bool]:
    """Days since the last order, for members, in whole days (a member who last ordered
    90 days and 12 hours ago is at 90): "gte 90" is "last ordered 90 or more days ago".
    People who never ordered have no such number and never match."""
    at = Contact.last_order_at

    def at_least(n: int) -> ColumnElement[bool]:  # whole days since >= n
        return at <= now - timedelta(days=n)

    def fewer_than(n: int) -> ColumnElement[bool]:  # whole days since < n
        return at > now - timedelta(days=n)

    if op in ("in", "not_in"):
        either = or_(false(), *(_days_since("eq", d, now) for d in days))
        return either if op == "in" else and_(at.is_not(None), not_(either))
    whole = float(days).is_integer()
    low, high = math.floor(days), math.ceil(days)
    conditions = {
        "gte": at_least(high),
        "gt": at_least(low + 1),
        "lte": fewer_than(low + 1),
        "lt": fewer_than(high),
        "eq": and_(at_least(low), fewer_than(low + 1)) if whole else false(),
        "ne": or_(fewer_than(low), at_least(low + 1)) if whole else true(),
    }
    return and_(at.is_not(None), conditions[op])


def _did(rule: Did, now: datetime) -> ColumnElement[bool]:
    b, ci = aliased(Behaviour), aliased(ContactIdentity)
    where = [ci.lead_id == Contact.lead_id, b.event == rule.event]
    if rule.within_days is not None:
        where.append(b.at >= now - timedelta(days=rule.within_days))
    if rule.category is not None:
        where.append(b.category == rule.category)
    if rule.product_id is not None:
        where.append(b.product_id == rule.product_id)
    joined = select(b.id).join(ci, and_(ci.kind == b.kind, ci.value == b.value)).where(*where)
    if rule.count_gte == 1:
        return exists(joined)
    counted = (
        select(func.count(func.distinct(b.event_id)))
        .select_from(b)
        .join(ci, and_(ci.kind == b.kind, ci.value == b.value))
        .where(*where)
        .scalar_subquery()
    )
    return counted >= rule.count_gte

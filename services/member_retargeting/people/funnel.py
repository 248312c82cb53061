"""The funnel report: of the people first seen in a time window, how many reached each
stage (visitor → lead → MQL → SQL → customer → member), the conversion between stages,
by first-touch channel (search and social by engine or network), landing page and
campaign, and the median time between stages; and what most often comes before a
purchase (products looked at, intent topics researched).

Read from the journeys projection (:mod:`..processing.journeys`) and the contacts
(membership), both kept by this service's consumer from Kafka: no other service is
asked. A cohort is the people whose first visit falls in ``[since, until)``; what they
reached is counted as of now, so a recent window keeps filling in. Counts and breakdowns
are aggregated in the database; medians and intent topics read at most ``SAMPLE`` rows
(the newest), so a report costs the same at any size and says when it sampled.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, func, or_, select
from sqlalchemy.orm import Session

from services.member_retargeting.model.funnel import (
    STAGES,
    StageCounts,
    median_seconds,
    ordered_channels,
    rate,
)
from services.member_retargeting.models import Behaviour, Contact, ContactIdentity, Journey

SAMPLE = 50_000
TOP = 20
# What a person does with a product before they buy it (Segment's e-commerce spec).
LOOKING = ("Product Viewed", "Product Clicked", "Product Added", "Checkout Started")


def _member() -> ColumnElement[bool]:
    return Contact.is_member.is_(True)


def _stage_sums() -> list[Any]:
    """One sum per stage: visitors are every journey; a member has passed every stage."""
    sums: list[Any] = [func.count(Journey.id)]
    for rank in range(1, len(STAGES) - 1):
        sums.append(func.sum(case((or_(Journey.reached >= rank, _member()), 1), else_=0)))
    sums.append(func.sum(case((_member(), 1), else_=0)))
    return sums


def _cohort(stmt: Select[Any], since: datetime, until: datetime) -> Select[Any]:
    return stmt.outerjoin(Contact, Contact.lead_id == Journey.lead_id).where(
        Journey.merged_into.is_(None),
        Journey.first_seen_at >= since,
        Journey.first_seen_at < until,
    )


def _counts(row: Any, offset: int) -> StageCounts:
    return StageCounts(tuple(int(v or 0) for v in row[offset : offset + len(STAGES)]))


def funnel_report(session: Session, since: datetime, until: datetime) -> dict[str, Any]:
    """The whole report for a window (see the module's docstring)."""
    total = session.execute(
        _cohort(select(*_stage_sums()).select_from(Journey), since, until)
    ).one()

    def grouped(*keys: Any, where: Any = None, top: int | None = None) -> list[Any]:
        stmt = _cohort(select(*keys, *_stage_sums()).select_from(Journey), since, until)
        if where is not None:
            stmt = stmt.where(where)
        stmt = stmt.group_by(*keys).order_by(func.count(Journey.id).desc(), *keys)
        return list(session.execute(stmt.limit(top) if top else stmt))

    channels = {row[0]: _counts(row, 1) for row in grouped(Journey.channel)}
    sources = grouped(Journey.channel, Journey.engine, where=Journey.engine.is_not(None))
    landing = grouped(Journey.landing_page, where=Journey.landing_page.is_not(None), top=TOP)
    campaigns = grouped(Journey.campaign, where=Journey.campaign.is_not(None), top=TOP)
    times = session.execute(
        _cohort(
            select(
                Journey.first_seen_at,
                Journey.lead_at,
                Journey.mql_at,
                Journey.sql_at,
                Journey.customer_at,
                case((_member(), Contact.member_since), else_=None).label("member_at"),
            ).select_from(Journey),
            since,
            until,
        )
        .order_by(Journey.first_seen_at.desc())
        .limit(SAMPLE)
    ).all()
    return {
        "since": since,
        "until": until,
        "stages": _counts(total, 0).rows(),
        "by_channel": [
            {"channel": c, "stages": channels[c].rows()} for c in ordered_channels(list(channels))
        ],
        "by_source": [
            {"channel": row[0], "engine": row[1], "stages": _counts(row, 2).rows()}
            for row in sources
        ],
        "by_landing_page": [
            {"landing_page": row[0], "stages": _counts(row, 1).rows()} for row in landing
        ],
        "by_campaign": [
            {"campaign": row[0], "stages": _counts(row, 1).rows()} for row in campaigns
        ],
        "median_seconds": median_seconds(dict(row._mapping) for row in times),
        "sampled": len(times) == SAMPLE,
    }


def purchase_precursors(
    session: Session, since: datetime, until: datetime, top: int = 10
) -> dict[str, Any]:
    """For the people whose first order falls in the window: the products they looked at
    in the window before it (with how many buyers did, and of everyone known who looked
    at the product in the window, the share that went on to buy), and the intent topics buyers
    researched against everyone else (the share of each topic's people who bought)."""
    bought = and_(
        Contact.merged_into.is_(None),
        Contact.first_order_at >= since,
        Contact.first_order_at < until,
    )
    buyers = session.scalar(select(func.count()).select_from(Contact).where(bought)) or 0
    product = func.coalesce(Behaviour.product_name, Behaviour.product_id)
    person = func.count(func.distinct(ContactIdentity.lead_id))
    joined = select(product.label("product"), person.label("people")).join(
        ContactIdentity,
        and_(ContactIdentity.kind == Behaviour.kind, ContactIdentity.value == Behaviour.value),
    )
    before = session.execute(
        joined.join(Contact, Contact.lead_id == ContactIdentity.lead_id)
        .where(bought, Behaviour.event.in_(LOOKING), Behaviour.at <= Contact.first_order_at)
        # Looked within the window too: the buyers are then some of the lookers counted
        # below, and "bought after looking" a share of them.
        .where(Behaviour.at >= since)
        .where(product.is_not(None))
        .group_by(product)
        .order_by(person.desc(), product)
        .limit(top)
    ).all()
    names = [row.product for row in before]
    lookers = (
        dict(
            session.execute(
                joined.where(
                    Behaviour.event.in_(LOOKING),
                    Behaviour.at >= since,
                    Behaviour.at < until,
                    product.in_(names),
                ).group_by(product)
            ).all()
        )
        if names
        else {}
    )
    products = [
        {
            "product": row.product,
            "buyers": row.people,
            "share_of_buyers": rate(row.people, buyers),
            "looked": lookers.get(row.product, 0),
            "bought_after_looking": rate(row.people, lookers.get(row.product, 0)),
        }
        for row in before
    ]
    return {
        "since": since,
        "until": until,
        "buyers": buyers,
        "products": products,
        **_intents(session, since, until, top),
    }


def _intents(session: Session, since: datetime, until: datetime, top: int) -> dict[str, Any]:
    """Intent topics of the people known in the window (at most ``SAMPLE``, the newest):
    how many researched each, how many of those bought, the share that did."""
    rows = session.execute(
        select(Contact.intent, Contact.first_order_at.is_not(None))
        .where(
            Contact.merged_into.is_(None),
            Contact.updated_at >= since,
            Contact.updated_at < until,
            Contact.intent.is_not(None),
        )
        .order_by(Contact.updated_at.desc())
        .limit(SAMPLE)
    ).all()
    people: dict[str, int] = {}
    buying: dict[str, int] = {}
    for intent, bought in rows:
        for topic, points in (intent or {}).items() if isinstance(intent, dict) else ():
            if isinstance(points, int) and points > 0:
                people[topic] = people.get(topic, 0) + 1
                buying[topic] = buying.get(topic, 0) + int(bool(bought))
    ranked = sorted(people, key=lambda t: (-buying[t], -people[t], t))[:top]
    return {
        "intents": [
            {
                "topic": t,
                "people": people[t],
                "buyers": buying[t],
                "bought": rate(buying[t], people[t]),
            }
            for t in ranked
        ],
        "intents_sampled": len(rows) == SAMPLE,
    }

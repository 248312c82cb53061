"""Segments compiled to SQL, on SQLite and PostgreSQL: the issue's examples match exactly
the contacts they should (fed through the real handlers), every built-in segment matches
its person and not its near miss, and — the strongest check — for random rules over a
random population the database's answer equals a brute-force Python evaluation of the
rule language."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import delete, select, text
from sqlalchemy.orm import Session

from services.member_retargeting.model.rfm import GROUPS
from services.member_retargeting.model.segments import (
    ATTRIBUTES,
    INTENT_PREFIX,
    OPS,
    All,
    AnyOf,
    Attribute,
    Did,
    Not,
    Rule,
    parse,
)
from services.member_retargeting.models import Behaviour, Contact, ContactIdentity
from services.member_retargeting.people import segments as compiled
from services.member_retargeting.people.segments import (
    BUILTINS,
    audience,
    count,
    sample,
    stored_count,
)
from shared.db import utcnow
from shared.events import Envelope, new_event
from shared.identity import ANONYMOUS_ID, USER_ID
from shared.topics import LEADS, TRAFFIC
from tests.unit.member_retargeting.conftest import did, feed, order, snapshot, stage, state_of

DAY = timedelta(days=1)
NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)

# ----------------------------------------------------------------------------- helpers


def matched(app: Flask, rule: dict[str, Any], now: datetime | None = None) -> list[str]:
    """The ids ``audience`` returns for ``rule`` (checking ``count`` agrees)."""
    parsed = parse(rule)
    now = now or utcnow()
    with state_of(app).sessions() as session:
        ids = list(session.scalars(audience(parsed, now)))
        assert ids == sorted(ids), "audience is in a stable (lead id) order"
        assert count(session, parsed, now) == len(ids)
    return ids


def anon_did(anon: str, event: str, *, at: datetime, **properties: Any) -> tuple[str, Envelope]:
    return TRAFFIC, new_event(
        "track",
        {"event": event, "properties": properties},
        source="web",
        anonymous_id=anon,
        occurred_at=at,
    )


def merged(survivor: str, gone: str, **kw: Any) -> tuple[str, Envelope]:
    return LEADS, new_event(
        "lead.merged",
        {"lead": snapshot(survivor, **kw), "merged_lead_id": gone, "reason": "same person"},
        source="lead-scoring",
    )


def add_contact(
    session: Session,
    lead_id: str,
    *,
    ids: Iterable[tuple[str, str]] = (),
    **fields: Any,
) -> Contact:
    values: dict[str, Any] = {
        "stage": "lead",
        "score": 0,
        "is_member": False,
        "orders_count": 0,
        "revenue_total": Decimal(0),
        "traits": {},
        "intent": {},
    }
    values.update(fields)
    contact = Contact(lead_id=lead_id, **values)
    session.add(contact)
    for kind, value in ids:
        session.add(ContactIdentity(kind=kind, value=value, lead_id=lead_id))
    return contact


def add_behaviour(
    session: Session,
    who: tuple[str, str],
    event: str,
    at: datetime,
    *,
    event_id: str,
    category: str | None = None,
    product_id: str | None = None,
) -> None:
    session.add(
        Behaviour(
            kind=who[0],
            value=who[1],
            event=event,
            at=at,
            event_id=event_id,
            category=category,
            product_id=product_id,
        )
    )


# ------------------------------------------------------------- the examples


def test_product_added_in_the_last_3_days_and_no_order_completed(app: Flask) -> None:
    now = utcnow()
    ago = lambda days: now - timedelta(days=days)  # noqa: E731
    feed(
        app,
        *(stage(f"L{i}", "lead", user=f"u{i}") for i in range(1, 5)),
        stage("L5", "lead", anon=("a5",)),
        stage("L6", "lead", anon=("a6",), user="u6"),
        did("u1", "Product Added", at=ago(1), product_id="p1"),  # abandoned
        did("u2", "Product Added", at=ago(1), product_id="p1"),
        order("u2", 10, at=ago(0.5)),  # ...and bought
        did("u3", "Product Added", at=ago(5), product_id="p1"),  # too long ago
        did("u4", "Product Added", at=ago(2), product_id="p1"),
        order("u4", 10, at=ago(10)),  # bought, but before the window
        anon_did("a5", "Product Added", at=ago(2), product_id="p1"),  # by the browser id
        anon_did("a6", "Product Added", at=ago(1), product_id="p1"),
        order("u6", 10, at=ago(0.25)),  # bought once signed in: same person
        did("u-stranger", "Product Added", at=ago(1), product_id="p1"),
    )
    rule = {
        "all": [
            {"event": "Product Added", "within_days": 3},
            {"not": {"event": "Order Completed", "within_days": 3}},
        ]
    }
    assert matched(app, rule, now) == ["L1", "L4", "L5"]


def test_gold_tier_and_no_purchase_in_90_days(app: Flask) -> None:
    now = utcnow()
    ago = lambda days: now - timedelta(days=days)  # noqa: E731
    feed(app, *(stage(f"L{i}", "lead", user=f"u{i}") for i in range(1, 6)))
    feed(
        app,
        order("u1", 2500, at=ago(100)),  # gold, lapsed
        order("u2", 2500, at=ago(10)),  # gold, recent
        order("u3", 600, at=ago(100)),  # silver, lapsed
        order("u4", 1500, at=ago(200)),
        order("u4", 1000, at=ago(95)),  # gold over two orders, lapsed
        order("u5", 2500, at=ago(100)),
        order("u5", 1, at=ago(89)),  # gold, bought just inside 90 days
    )
    gold = {"attribute": "tier", "op": "eq", "value": "gold"}
    by_events = {"all": [gold, {"not": {"event": "Order Completed", "within_days": 90}}]}
    by_attribute = {"all": [gold, {"attribute": "days_since_last_order", "op": "gte", "value": 90}]}
    assert matched(app, gold, now) == ["L1", "L2", "L4", "L5"]
    assert matched(app, by_events, now) == ["L1", "L4"]
    assert matched(app, by_attribute, now) == ["L1", "L4"]


def test_stage_mql_and_intent_at_least_n(app: Flask) -> None:
    feed(
        app,
        stage("L1", "mql", intent={"pricing": 12}),
        stage("L2", "mql", intent={"pricing": 10, "demo": 1}),
        stage("L3", "mql", intent={"pricing": 9}),
        stage("L4", "sql", intent={"pricing": 50}),
        stage("L5", "mql"),
        stage("L6", "mql", intent={"demo": 40}),
    )
    mql = {"attribute": "stage", "op": "eq", "value": "mql"}

    def pricing(op: str, value: Any) -> dict[str, Any]:
        return {"all": [mql, {"attribute": "intent:pricing", "op": op, "value": value}]}

    assert matched(app, pricing("gte", 10)) == ["L1", "L2"]
    assert matched(app, pricing("gt", 10)) == ["L1"]
    # No points for a topic are 0 points.
    assert matched(app, pricing("lt", 5)) == ["L5", "L6"]
    assert matched(app, pricing("eq", 0)) == ["L5", "L6"]
    assert matched(app, pricing("in", [9, 12])) == ["L1", "L3"]
    assert matched(app, {"attribute": "intent:demo", "op": "gte", "value": 1}) == ["L2", "L6"]


def test_bought_category_x_never_y(app: Flask) -> None:
    def bought(who: str, *categories: str) -> tuple[str, Envelope]:
        return order(who, 10, products=[{"product_id": c, "category": c} for c in categories])

    feed(
        app,
        *(stage(f"L{i}", "lead", user=f"u{i}") for i in range(1, 6)),
        stage("L6", "lead", anon=("a6",)),
        bought("u1", "shoes"),
        bought("u1", "socks"),
        bought("u2", "shoes"),
        bought("u2", "hats"),  # then hats, in another order
        bought("u3", "shoes", "hats"),  # both in one order
        did("u4", "Product Viewed", category="shoes"),  # looked, never bought
        bought("u4", "socks"),
        bought("u5", "hats"),
        anon_did("a6", "Order Completed", at=utcnow(), products=[{"category": "shoes"}]),
    )
    rule = {
        "all": [
            {"event": "Order Completed", "category": "shoes"},
            {"not": {"event": "Order Completed", "category": "hats"}},
        ]
    }
    assert matched(app, rule) == ["L1", "L6"]
    assert matched(app, {"event": "Order Completed", "product_id": "hats"}) == ["L2", "L3", "L5"]


def test_count_gte_counts_events_not_product_rows_across_all_ids(app: Flask) -> None:
    now = utcnow()
    ago = lambda days: now - timedelta(days=days)  # noqa: E731
    three = [{"product_id": p, "category": "c"} for p in ("p1", "p2", "p3")]
    feed(
        app,
        *(stage(f"L{i}", "lead", user=f"u{i}") for i in range(1, 4)),
        stage("L4", "lead", user="u4", anon=("a4",)),
        stage("L5", "lead", user="u5"),
        *(did("u1", "Product Viewed", at=ago(d), product_id="p1") for d in (1, 2, 3)),
        *(did("u2", "Product Viewed", at=ago(d), product_id="p1") for d in (1, 2)),
        did("u3", "Product Viewed", at=ago(1), products=three),  # one event, three rows
        did("u4", "Product Viewed", at=ago(1), product_id="p1"),
        did("u4", "Product Viewed", at=ago(2), product_id="p2"),
        anon_did("a4", "Product Viewed", at=ago(3), product_id="p3"),
        *(did("u5", "Product Viewed", at=ago(d), product_id="p1") for d in (1, 2, 10, 20)),
    )
    assert matched(app, {"event": "Product Viewed", "count_gte": 3}, now) == [
        "L1",
        "L4",
        "L5",
    ]
    assert matched(app, {"event": "Product Viewed", "count_gte": 3, "within_days": 7}, now) == [
        "L1",
        "L4",
    ]
    assert matched(app, {"event": "Product Viewed", "count_gte": 2, "product_id": "p1"}, now) == [
        "L1",
        "L2",
        "L5",
    ]
    assert matched(
        app, {"not": {"event": "Product Viewed", "count_gte": 2, "within_days": 7}}, now
    ) == ["L3"]


def test_any_and_not_combine(app: Flask) -> None:
    feed(
        app,
        stage("L1", "sql", email="a@x.co", score=10),
        stage("L2", "mql", score=80),
        stage("L3", "mql", email="c@x.co", score=80),
        stage("L4", "lead", email="d@x.co", score=5),
    )
    rule = {
        "any": [
            {"attribute": "stage", "op": "eq", "value": "sql"},
            {"not": {"attribute": "has_email", "op": "eq", "value": True}},
        ]
    }
    assert matched(app, rule) == ["L1", "L2"]
    assert matched(app, {"not": rule}) == ["L3", "L4"]
    assert matched(app, {"all": []}) == ["L1", "L2", "L3", "L4"]
    assert matched(app, {"not": {"all": []}}) == []
    nested = {
        "all": [
            {"attribute": "score", "op": "gte", "value": 10},
            {"not": {"any": [{"attribute": "stage", "op": "in", "value": ["sql", "lead"]}]}},
        ]
    }
    assert matched(app, nested) == ["L2", "L3"]


def test_has_email_and_has_phone(app: Flask) -> None:
    feed(
        app,
        stage("L1", "lead", email="a@x.co", traits={"phone": "+886912345678"}),
        stage("L2", "lead", email="b@x.co"),
        stage("L3", "lead", traits={"phone": "+14155550123"}),
        stage("L4", "lead", traits={"phone": "   "}),  # blank: no phone
    )
    has = lambda name, value: {"attribute": name, "op": "eq", "value": value}  # noqa: E731
    assert matched(app, has("has_email", True)) == ["L1", "L2"]
    assert matched(app, has("has_email", False)) == ["L3", "L4"]
    assert matched(app, has("has_phone", True)) == ["L1", "L3"]
    assert matched(app, has("has_phone", False)) == ["L2", "L4"]


def test_country_is_compared_without_case(app: Flask) -> None:
    feed(
        app,
        stage("L1", "lead", traits={"country": "TW"}),
        stage("L2", "lead", traits={"country": "tw"}),
        stage("L3", "lead", traits={"address": {"country": "Tw"}, "country": "US"}),
        stage("L4", "lead", traits={"country": "De"}),
        stage("L5", "lead"),
    )
    country = lambda op, value: {"attribute": "country", "op": op, "value": value}  # noqa: E731
    assert matched(app, country("eq", "tW")) == ["L1", "L2", "L3"]
    assert matched(app, country("in", ["de", "TW"])) == ["L1", "L2", "L3", "L4"]
    # No country is not "TW": ne and not_in include the unknown.
    assert matched(app, country("ne", "TW")) == ["L4", "L5"]
    assert matched(app, country("not_in", ["tw", "us"])) == ["L4", "L5"]


def test_country_beyond_ascii_matches_as_written_and_without_case(app: Flask) -> None:
    """Traits carry country names as people type them. A rule spelling the country
    exactly as stored must match it, and case must not matter for non-ASCII letters
    either (the rule's value is lower-cased in Python, the column by the database)."""
    feed(
        app,
        stage("L1", "lead", traits={"country": "Österreich"}),
        stage("L2", "lead", traits={"country": "ÖSTERREICH"}),
        stage("L3", "lead", traits={"country": "Deutschland"}),
    )
    country = lambda value: {"attribute": "country", "op": "eq", "value": value}  # noqa: E731
    assert matched(app, country("Österreich")) == ["L1", "L2"]
    assert matched(app, country("österreich")) == ["L1", "L2"]


DAYS_SINCE_CASES: list[tuple[str, Any, list[str]]] = [
    ("gte", 90, ["D090", "D091", "D200"]),
    ("gt", 90, ["D091", "D200"]),
    ("lte", 90, ["D000", "D030", "D089", "D090"]),
    ("lt", 90, ["D000", "D030", "D089"]),
    ("eq", 90, ["D090"]),
    ("eq", 0, ["D000"]),
    ("ne", 90, ["D000", "D030", "D089", "D091", "D200"]),
    ("in", [30, 91], ["D030", "D091"]),
    ("not_in", [30, 91], ["D000", "D089", "D090", "D200"]),
]


def test_days_since_last_order(app: Flask) -> None:
    """Whole days since the last order; people who never ordered never match, not even
    ``ne`` or ``not_in``."""
    with state_of(app).sessions.begin() as session:
        for days in (0, 30, 89, 90, 91, 200):
            add_contact(
                session,
                f"D{days:03d}",
                is_member=True,
                orders_count=1,
                last_order_at=NOW - timedelta(days=days),
            )
        add_contact(session, "NEVER", is_member=True)
        add_contact(session, "NONMEMBER")
    got = {
        (op, str(value)): matched(
            app, {"attribute": "days_since_last_order", "op": op, "value": value}, NOW
        )
        for op, value, _ in DAYS_SINCE_CASES
    }
    assert got == {(op, str(value)): expected for op, value, expected in DAYS_SINCE_CASES}


def test_days_since_last_order_is_one_number_per_person(app: Flask) -> None:
    """Someone who last ordered 90 and a half days ago is 90 days since their last order
    by ``eq`` (and ``in``, ``ne``): then ``lte 90`` must hold and ``gt 90`` must not —
    the operators must agree on the number they compare."""
    with state_of(app).sessions.begin() as session:
        add_contact(
            session,
            "HALF",
            is_member=True,
            orders_count=1,
            last_order_at=NOW - timedelta(days=90, hours=12),
        )
    since = lambda op, value: {  # noqa: E731
        "attribute": "days_since_last_order",
        "op": op,
        "value": value,
    }
    assert matched(app, since("eq", 90), NOW) == ["HALF"]
    assert matched(app, since("gte", 90), NOW) == ["HALF"]
    assert matched(app, since("lt", 91), NOW) == ["HALF"]
    assert matched(app, since("lte", 90), NOW) == ["HALF"]
    assert matched(app, since("gt", 90), NOW) == []


def test_merged_contacts_never_match_and_their_behaviour_follows_them(app: Flask) -> None:
    feed(
        app,
        stage("L1", "mql", email="a@x.co", user="u1"),
        stage("L2", "mql", email="a@x.co", anon=("a2",)),
        anon_did("a2", "Product Added", at=utcnow(), product_id="p1"),
    )
    assert matched(app, {"event": "Product Added"}) == ["L2"]
    feed(app, merged("L1", "L2", stage="mql", email="a@x.co", user="u1"))
    assert matched(app, {"attribute": "stage", "op": "eq", "value": "mql"}) == ["L1"]
    assert matched(app, {"all": []}) == ["L1"]
    assert matched(app, {"not": {"attribute": "score", "op": "gt", "value": 1000}}) == ["L1"]
    # The browser's behaviour is the survivor's now.
    assert matched(app, {"event": "Product Added"}) == ["L1"]


def test_behaviour_is_reached_through_an_anonymous_id_the_snapshot_lists(app: Flask) -> None:
    now = utcnow()
    feed(
        app,
        anon_did("a1", "Product Viewed", at=now - DAY, product_id="p1", category="shoes"),
        anon_did("a-unlisted", "Product Viewed", at=now - DAY, product_id="p1"),
    )
    rule = {"event": "Product Viewed", "category": "shoes", "within_days": 2}
    feed(app, stage("L1", "lead", user="u1"), stage("L2", "lead", anon=("zzz",)))
    assert matched(app, rule, now) == []  # traffic before the person is known
    feed(app, stage("L1", "lead", user="u1", anon=("a0", "a1")))
    assert matched(app, rule, now) == ["L1"]


def test_count_equals_the_audience_and_sample_is_bounded(app: Flask) -> None:
    feed(app, *(stage(f"L{i:02d}", "mql" if i % 3 else "sql", score=i) for i in range(15)))
    rule = parse({"attribute": "stage", "op": "eq", "value": "mql"})
    with state_of(app).sessions() as session:
        everyone = list(session.scalars(audience(rule, NOW)))
        assert count(session, rule, NOW) == len(everyone) == 10
        for size in (0, 1, 3, 10, 50):
            got = [c.lead_id for c in sample(session, rule, NOW, size=size)]
            assert len(got) == min(size, 10)
            assert len(set(got)) == len(got) and set(got) <= set(everyone)
        assert len(sample(session, rule, NOW)) == 10


# ------------------------------------------------------------------------ built-ins


def _builtin_people(session: Session, name: str) -> None:
    """Add ``MATCH`` (in the segment) and ``MISS`` (a near miss) for built-in ``name``."""
    member: dict[str, Any] = {"is_member": True, "orders_count": 1, "last_order_at": NOW - DAY}
    if name == "Cart abandoners":
        add_contact(session, "MATCH", ids=[(USER_ID, "m")])
        add_contact(session, "MISS", ids=[(USER_ID, "x")])
        add_behaviour(session, (USER_ID, "m"), "Product Added", NOW - DAY, event_id="e1")
        add_behaviour(session, (USER_ID, "m"), "Order Completed", NOW - 4 * DAY, event_id="e2")
        add_behaviour(session, (USER_ID, "x"), "Product Added", NOW - DAY, event_id="e3")
        add_behaviour(session, (USER_ID, "x"), "Order Completed", NOW - 2 * DAY, event_id="e4")
    elif name == "Lapsed members":
        add_contact(session, "MATCH", **{**member, "last_order_at": NOW - 120 * DAY})
        add_contact(session, "MISS", **{**member, "last_order_at": NOW - 89 * DAY})
    elif name == "VIPs":
        add_contact(session, "MATCH", **member, tier="gold", rfm_group="Hibernating")
        add_contact(session, "MATCH2", **member, tier="member", rfm_group="Champions")
        add_contact(session, "MISS", **member, tier="silver", rfm_group="Loyal")
    elif name == "Hot leads who did not buy":
        add_contact(session, "MATCH", stage="sql", score=50)
        add_contact(session, "MISS", **member, stage="sql", score=90)
        add_contact(session, "MISS2", stage="mql", score=49)
        add_contact(session, "MISS3", stage="lead", score=99)
    else:
        raise AssertionError(f"no people for built-in {name!r}: add them to this test")


def test_each_builtin_matches_its_person_and_not_the_near_miss(app: Flask) -> None:
    assert len(BUILTINS) == 4
    for name in sorted(BUILTINS):
        with state_of(app).sessions.begin() as session:
            for table in (Behaviour, ContactIdentity, Contact):
                session.execute(delete(table))
            _builtin_people(session, name)
            everyone = list(session.scalars(select(Contact.lead_id)))
        expected = sorted(i for i in everyone if i.startswith("MATCH"))
        assert expected and len(expected) < len(everyone)
        assert matched(app, BUILTINS[name][1], NOW) == expected, name


# ---------------------------------------------------------- rules vs. brute force

EVENTS = ("Product Viewed", "Product Added", "Order Completed", "Signed Up")
CATEGORIES = ("shoes", "hats", "socks")
PRODUCTS = ("p1", "p2", "p3")
STAGE_VALUES = ("lead", "mql", "sql", "customer", "opportunity")
TIERS = ("member", "silver", "gold")
COUNTRIES = ("TW", "tw", "De", "US")
REVENUES = (Decimal("0"), Decimal("19.50"), Decimal("120.25"), Decimal("500"), Decimal("2500"))


@dataclass
class Row:
    kind: str
    value: str
    event: str
    at: datetime
    event_id: str
    category: str | None
    product_id: str | None


@dataclass
class Person:
    lead_id: str
    fields: dict[str, Any]
    ids: list[tuple[str, str]]
    merged: bool = False
    rows: list[Row] = field(default_factory=list)


def _offset(rng: random.Random, days: int, any_time: bool) -> timedelta:
    """``days`` whole days, or (any time of day) up to a day more."""
    return timedelta(days=days, seconds=rng.randrange(86_400) if any_time else 0)


def make_population(seed: int, any_time: bool) -> tuple[list[Person], list[Row]]:
    rng = random.Random(seed)
    people: list[Person] = []
    for i in range(16):
        member = rng.random() < 0.6
        fields: dict[str, Any] = {
            "stage": rng.choice(STAGE_VALUES),
            "score": rng.choice((0, 10, 49, 50, 80, 100)),
            "email": rng.choice((None, f"c{i}@x.co")),
            "phone": rng.choice((None, "+886912345678")),
            "country": rng.choice((None, *COUNTRIES)),
            "intent": rng.choice(
                ({}, {"pricing": rng.randint(0, 12)}, {"pricing": 5, "demo": rng.randint(0, 3)})
            ),
            "is_member": member,
        }
        if member:
            fields.update(
                tier=rng.choice(TIERS),
                orders_count=rng.randint(0, 5),
                revenue_total=rng.choice(REVENUES),
                # A member with no order (a customer by stage) has no last order.
                last_order_at=None
                if rng.random() < 0.15
                else NOW - _offset(rng, rng.choice((0, 1, 3, 29, 30, 31, 89, 90, 91)), any_time),
                rfm_recency=rng.choice((None, 1, 2, 3, 4, 5)),
                rfm_frequency=rng.randint(1, 5),
                rfm_monetary=rng.randint(1, 5),
                rfm_group=rng.choice((None, *GROUPS)),
            )
        ids = [(USER_ID, f"u{i}")]
        if rng.random() < 0.5:
            ids.append((ANONYMOUS_ID, f"a{i}"))
        people.append(Person(f"C{i:02d}", fields, ids, merged=i in (3, 11)))
    # What people did, by any of their ids, and by ids nobody is known by.
    strangers = [(USER_ID, "stranger"), (ANONYMOUS_ID, "lost-browser")]
    orphans: list[Row] = []
    n = 0
    for who in [i for p in people for i in p.ids] + strangers:
        for _ in range(rng.randint(0, 4)):
            n += 1
            event, at = rng.choice(EVENTS), NOW - _offset(rng, rng.randint(0, 40), any_time)
            for _ in range(rng.choice((1, 1, 2, 3))):  # some events name several products
                row = Row(
                    who[0],
                    who[1],
                    event,
                    at,
                    f"e{n}",
                    rng.choice((None, *CATEGORIES)),
                    rng.choice((None, *PRODUCTS)),
                )
                owner = next((p for p in people if who in p.ids), None)
                (owner.rows if owner else orphans).append(row)
    return people, orphans


def store(session: Session, people: list[Person], orphans: list[Row]) -> None:
    for p in people:
        add_contact(
            session,
            p.lead_id,
            ids=p.ids,
            merged_into="C00" if p.merged else None,
            **p.fields,
        )
    for row in [r for p in people for r in p.rows] + orphans:
        add_behaviour(
            session,
            (row.kind, row.value),
            row.event,
            row.at,
            event_id=row.event_id,
            category=row.category,
            product_id=row.product_id,
        )


def _values(name: str, rng: random.Random) -> list[Any]:
    if name == "stage":
        return list(STAGE_VALUES)
    if name == "tier":
        return [*TIERS, "bronze"]
    if name == "rfm_group":
        return list(GROUPS)
    if name == "country":
        return ["tw", "TW", "de", "us", "fr"]
    if name == "score":
        return [0, 10, 49, 50, 50.5, 80, 100]
    if name == "orders":
        return [0, 1, 2, 3, 5]
    if name == "revenue":
        return [0, 19.5, 120.25, 500, 2500, 100]
    if name == "days_since_last_order":
        return [0, 1, 3, 29, 30, 31, 89, 90, 91]
    if name.startswith("rfm_"):
        return [1, 2, 3, 4, 5]
    return list(range(0, 13))  # intent


def random_rule(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    roll = rng.random()
    if depth < 3 and roll < 0.4:
        kind = rng.choice(("all", "any", "not"))
        if kind == "not":
            return {"not": random_rule(rng, depth + 1)}
        size = rng.randint(0 if kind == "all" else 1, 3)
        return {kind: [random_rule(rng, depth + 1) for _ in range(size)]}
    if roll < 0.7:
        name = rng.choice([*ATTRIBUTES, "intent:pricing", "intent:demo"])
        kind = ATTRIBUTES[name][0] if name in ATTRIBUTES else "number"
        op = rng.choice(OPS[kind])
        if kind == "flag":
            return {"attribute": name, "op": op, "value": rng.random() < 0.5}
        pool = _values(name, rng)
        value: Any = rng.sample(pool, rng.randint(1, 3)) if op in ("in", "not_in") else None
        return {"attribute": name, "op": op, "value": value or rng.choice(pool)}
    rule: dict[str, Any] = {"event": rng.choice(EVENTS)}
    if rng.random() < 0.6:
        rule["within_days"] = rng.choice((1, 3, 7, 30))
    if rng.random() < 0.4:
        rule["count_gte"] = rng.randint(1, 3)
    if rng.random() < 0.3:
        rule["category"] = rng.choice(CATEGORIES)
    if rng.random() < 0.2:
        rule["product_id"] = rng.choice(PRODUCTS)
    return rule


# The brute-force evaluator: the rule language as its documentation states it.


def _compare(actual: Any, op: str, value: Any) -> bool:
    if op == "in":
        return actual is not None and actual in value
    if op == "not_in":
        return actual is None or actual not in value
    if op == "ne":
        return actual is None or actual != value
    if actual is None:
        return False
    return {
        "eq": actual == value,
        "gt": actual > value,
        "gte": actual >= value,
        "lt": actual < value,
        "lte": actual <= value,
    }[op]


def _attribute_holds(rule: Attribute, person: Person, now: datetime) -> bool:
    f = person.fields
    name, op, value = rule.name, rule.op, rule.value
    if name == "has_email":
        return (f.get("email") is not None) == value
    if name == "has_phone":
        return (f.get("phone") is not None) == value
    if name == "days_since_last_order":
        last = f.get("last_order_at")
        if last is None:
            return False  # never ordered: no such number, never matches
        days = (now - last) // DAY  # whole days since the last order
        return _compare(days, op, value)
    if name == "country":
        country = f.get("country")
        lowered = tuple(v.lower() for v in value) if isinstance(value, tuple) else value.lower()
        return _compare(country.lower() if country else None, op, lowered)
    if name.startswith(INTENT_PREFIX):
        return _compare(f["intent"].get(name.removeprefix(INTENT_PREFIX), 0), op, value)
    column = {"orders": "orders_count", "revenue": "revenue_total"}.get(name, name)
    defaults = {"orders_count": 0, "revenue_total": Decimal(0), "is_member": False}
    return _compare(f.get(column, defaults.get(column)), op, value)


def _did_holds(rule: Did, person: Person, now: datetime) -> bool:
    events = {
        r.event_id
        for r in person.rows
        if r.event == rule.event
        and (rule.within_days is None or r.at >= now - timedelta(days=rule.within_days))
        and (rule.category is None or r.category == rule.category)
        and (rule.product_id is None or r.product_id == rule.product_id)
    }
    return len(events) >= rule.count_gte


def holds(rule: Rule, person: Person, now: datetime) -> bool:
    if isinstance(rule, All):
        return all(holds(r, person, now) for r in rule.rules)
    if isinstance(rule, AnyOf):
        return any(holds(r, person, now) for r in rule.rules)
    if isinstance(rule, Not):
        return not holds(rule.rule, person, now)
    if isinstance(rule, Did):
        return _did_holds(rule, person, now)
    return _attribute_holds(rule, person, now)


def brute_force(rule: Rule, people: list[Person], now: datetime) -> list[str]:
    return sorted(p.lead_id for p in people if not p.merged and holds(rule, p, now))


def _children(document: dict[str, Any]) -> list[dict[str, Any]]:
    if "not" in document:
        return [document["not"]]
    return list(document.get("all", document.get("any", [])))


def smallest_disagreement(
    session: Session, document: dict[str, Any], people: list[Person]
) -> dict[str, Any]:
    """The innermost part of ``document`` on which SQL and brute force still disagree:
    what a failure message should show."""
    for child in _children(document):
        rule = parse(child)
        if list(session.scalars(audience(rule, NOW))) != brute_force(rule, people, NOW):
            return smallest_disagreement(session, child, people)
    return document


@pytest.mark.parametrize("times", ["whole_days", "any_time_of_day"])
def test_random_rules_match_a_brute_force_evaluation(app: Flask, times: str) -> None:
    people, orphans = make_population(seed=20240601, any_time=times == "any_time_of_day")
    with state_of(app).sessions.begin() as session:
        store(session, people, orphans)
    rng = random.Random(7)
    rules = [random_rule(rng) for _ in range(50)]
    live = sum(not p.merged for p in people)
    informative = 0
    failures: list[str] = []
    with state_of(app).sessions() as session:
        for document in rules:
            rule = parse(document)
            expected = brute_force(rule, people, NOW)
            got = list(session.scalars(audience(rule, NOW)))
            if got != expected:
                part = smallest_disagreement(session, document, people)
                failures.append(
                    f"{json.dumps(part)}: SQL "
                    f"{list(session.scalars(audience(parse(part), NOW)))}, brute force "
                    f"{brute_force(parse(part), people, NOW)} (in {json.dumps(document)})"
                )
            assert count(session, rule, NOW) == len(got), document
            informative += 0 < len(expected) < live
    assert not failures, "SQL and brute force disagree:\n" + "\n".join(failures)
    # Not a vacuous check: most rules split the population.
    assert informative >= 20


# Regression (review finding 7): a rule stored by an older version (or one whose query
# fails) made every list that shows counts a 500.
@pytest.mark.parametrize(
    "document",
    [
        {"attribute": "days_since_last_order", "op": "gte", "value": 10**7},
        {"attribute": "score", "op": "gt", "value": 10**30},
        {"attribute": "tier", "op": "eq", "value": "a\u0000b"},
        {"attribute": "retired", "op": "eq", "value": 1},
    ],
)
def test_a_stored_rule_that_no_longer_holds_counts_as_none(app: Flask, document: Any) -> None:
    with state_of(app).sessions() as session:
        assert stored_count(session, document, utcnow()) is None


def test_a_stored_rule_whose_query_fails_counts_as_none_and_the_session_goes_on(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(session: Session, rule: Rule, now: datetime) -> int:
        # A database error on PostgreSQL (which aborts the transaction it happens in),
        # then a Python one (as a date beyond the calendar was).
        session.execute(text("SELECT CAST('x' AS INTEGER)"))
        raise OverflowError("date value out of range")

    feed(app, stage("A", "lead"))
    monkeypatch.setattr(compiled, "count", failing)
    with state_of(app).sessions() as session:
        assert stored_count(session, {"all": []}, utcnow()) is None
        assert session.scalar(select(Contact.lead_id)) == "A"  # still usable

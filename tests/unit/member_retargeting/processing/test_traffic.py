"""What traffic tells member-retargeting, through the real runner batch on SQLite and
PostgreSQL: consent decisions by identifier, behaviours one row per product, orders and
the members they refresh, and hostile input that must never stop (or dead-letter) an
event: an amount no order can hold loses only the order."""

from __future__ import annotations

from datetime import UTC, timedelta
from decimal import Decimal
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from services.member_retargeting.models import Behaviour, Consent, Contact, Order
from services.member_retargeting.processing.traffic import MAX_PRODUCTS
from shared.db import utcnow
from shared.events import Envelope, new_event
from shared.topics import MEMBERS, TRAFFIC
from tests.unit.member_retargeting.conftest import (
    consent,
    did,
    feed,
    order,
    published,
    stage,
    state_of,
)

# ----------------------------------------------------------------------------- helpers


def track(
    event: str,
    properties: dict[str, Any],
    *,
    user: str | None = None,
    anon: str | None = None,
    context: dict[str, Any] | None = None,
) -> tuple[str, Envelope]:
    return TRAFFIC, new_event(
        "track",
        {"event": event, "properties": properties},
        source="web",
        user_id=user,
        anonymous_id=anon,
        context=context,
    )


def identify(
    traits: dict[str, Any],
    *,
    user: str | None = None,
    anon: str | None = None,
    context: dict[str, Any] | None = None,
) -> tuple[str, Envelope]:
    return TRAFFIC, new_event(
        "identify",
        {"traits": traits},
        source="web",
        user_id=user,
        anonymous_id=anon,
        context=context,
    )


def anon_order(anon: str, revenue: Any) -> tuple[str, Envelope]:
    """An Order Completed by a browser not signed in (anonymous id only)."""
    return track("Order Completed", {"revenue": revenue, "currency": "eur"}, anon=anon)


def consents(app: Flask) -> set[tuple[str, str, str, bool]]:
    with state_of(app).sessions() as session:
        return {(c.kind, c.value, c.purpose, c.granted) for c in session.scalars(select(Consent))}


def behaviours(app: Flask) -> list[Behaviour]:
    with state_of(app).sessions() as session:
        rows = list(session.scalars(select(Behaviour).order_by(Behaviour.id)))
        session.expunge_all()
        return rows


def products_of(app: Flask, event_id: str) -> list[tuple[str | None, str | None, str | None]]:
    return [
        (b.product_id, b.product_name, b.category)
        for b in behaviours(app)
        if b.event_id == event_id
    ]


def contact(app: Flask, lead_id: str) -> Contact:
    with state_of(app).sessions() as session:
        found = session.get(Contact, lead_id)
        assert found is not None, lead_id
        session.expunge(found)
        return found


# ----------------------------------------------------------------------------- consent


def test_category_preferences_are_stored_by_the_identifier_they_arrived_with(
    app: Flask,
) -> None:
    at = utcnow() - timedelta(days=3)
    first = consent("u1", at=at, Marketing=True, statistics=False, functional=True)
    feed(
        app,
        # Consent managers' names map onto purposes; unknown categories are ignored.
        first,
        consent("a1", anonymous=True, targeting=False, email=True),
        # Any call carries consent; with both ids the decision is kept by the user id.
        track(
            "Button Clicked",
            {},
            user="u2",
            anon="a2",
            context={"consent": {"categoryPreferences": {"advertising": True}}},
        ),
    )
    assert consents(app) == {
        ("user_id", "u1", "marketing", True),
        ("user_id", "u1", "analytics", False),
        ("anonymous_id", "a1", "advertising", False),
        ("anonymous_id", "a1", "marketing", True),
        ("user_id", "u2", "advertising", True),
    }
    with state_of(app).sessions() as session:
        rows = session.scalars(select(Consent).where(Consent.value == "u1")).all()
        assert {(r.at, r.event_id, r.source) for r in rows} == {(at, first[1].event_id, "web")}


def test_identify_traits_state_consent_and_traits_win_over_context(app: Flask) -> None:
    feed(
        app,
        identify({"consent": {"ads": True, "performance": True}}, user="u1"),
        # The same call grants marketing in its context and withdraws it in its traits.
        identify(
            {"unsubscribed": True},
            user="u2",
            context={"consent": {"categoryPreferences": {"marketing": True, "analytics": True}}},
        ),
        identify({"consent": {"marketing": False}}, anon="a3"),
        # Only identify carries traits: a track's properties named so state nothing.
        track("Signed Up", {"consent": {"marketing": True}, "unsubscribed": True}, user="u4"),
    )
    assert consents(app) == {
        ("user_id", "u1", "advertising", True),
        ("user_id", "u1", "analytics", True),
        ("user_id", "u2", "marketing", False),
        ("user_id", "u2", "analytics", True),
        ("anonymous_id", "a3", "marketing", False),
    }


def test_unusable_consent_shapes_are_ignored_not_dead_lettered(app: Flask) -> None:
    feed(
        app,
        track("x", {}, user="u1", context={"consent": "yes"}),
        track("x", {}, user="u2", context={"consent": {"categoryPreferences": ["marketing"]}}),
        track(
            "x",
            {},
            user="u3",
            context={"consent": {"categoryPreferences": {"marketing": "true", "ads": 1}}},
        ),
        identify({"consent": ["marketing"], "unsubscribed": "yes"}, user="u4"),
        identify({"consent": {str(i): True for i in range(5000)}}, user="u5"),
    )
    assert consents(app) == set()


# -------------------------------------------------------------------------- behaviours


def test_a_product_event_is_one_row_with_its_product_fields(app: Flask) -> None:
    at = utcnow() - timedelta(hours=5)
    item = did("u1", "Product Added", at=at, product_id="p1", name="Red Shoe", category="shoes")
    by_sku = did("u1", "Product Viewed", sku="SKU-9", category="hats")
    feed(app, item, by_sku)
    row = next(b for b in behaviours(app) if b.event_id == item[1].event_id)
    assert (row.kind, row.value, row.event, row.at) == ("user_id", "u1", "Product Added", at)
    assert (row.product_id, row.product_name, row.category) == ("p1", "Red Shoe", "shoes")
    # sku stands in for a missing product id.
    assert products_of(app, by_sku[1].event_id) == [("SKU-9", None, "hats")]


def test_a_products_list_is_one_row_per_product_and_no_products_is_one_row(
    app: Flask,
) -> None:
    listed = order(
        "u1",
        "60",
        products=[
            {"product_id": "p1", "name": "Shoe", "category": "shoes"},
            {"sku": "s2", "category": "socks"},
            {"name": "Gift card"},
        ],
    )
    # A plain track, and an order with an empty products list, each are one row: "did
    # Order Completed" holds for them.
    plain = did("u1", "Signed Up", plan="pro")
    empty = order("u1", 10, products=[])
    anonymous = track("Product Viewed", {"product_id": "p7"}, anon="a1")
    feed(app, listed, plain, empty, anonymous)
    assert products_of(app, listed[1].event_id) == [
        ("p1", "Shoe", "shoes"),
        ("s2", None, "socks"),
        (None, "Gift card", None),
    ]
    assert products_of(app, plain[1].event_id) == [(None, None, None)]
    assert products_of(app, empty[1].event_id) == [(None, None, None)]
    assert [(b.kind, b.value, b.product_id) for b in behaviours(app)][-1] == (
        "anonymous_id",
        "a1",
        "p7",
    )
    assert len(behaviours(app)) == 6


def test_calls_other_than_track_leave_no_behaviour(app: Flask) -> None:
    feed(
        app,
        consent("u1", marketing=True),
        identify({"email": "a@x.co"}, user="u1"),
        (
            TRAFFIC,
            new_event("page", {"properties": {"product_id": "p1"}}, source="web", user_id="u"),
        ),
    )
    assert behaviours(app) == []


# ------------------------------------------------------------------------------ orders


def test_an_order_keeps_revenue_currency_and_ids(app: Flask) -> None:
    at = utcnow() - timedelta(days=2)
    first = order("u1", "120.505", at=at)
    feed(
        app,
        first,
        track("Order Completed", {"total": 99}, user="u2", anon="a2"),
        track("Order Completed", {"revenue": None, "currency": "euros"}, anon="a3"),
    )
    with state_of(app).sessions() as session:
        rows = {o.event_id: o for o in session.scalars(select(Order))}
    one = rows.pop(first[1].event_id)
    # Two decimals (half-even, as Decimal.quantize does by default), ISO currency.
    assert (one.user_id, one.anonymous_id, one.revenue, one.currency, one.occurred_at) == (
        "u1",
        None,
        Decimal("120.50"),
        "USD",
        at,
    )
    assert one.source == "web"
    rest = sorted(
        ((o.user_id, o.anonymous_id, o.revenue, o.currency) for o in rows.values()),
        key=str,
    )
    assert rest == sorted(
        [("u2", "a2", Decimal("99.00"), None), (None, "a3", Decimal("0.00"), "EUR")], key=str
    )


def test_an_order_refreshes_a_known_contact_and_no_one_else(app: Flask) -> None:
    feed(app, stage("L1", "mql", email="a@x.co", user="u1"))
    assert published(app, MEMBERS) == []
    feed(app, order("u-unknown", 50))  # nobody known: no contact, no event
    with state_of(app).sessions() as session:
        assert session.scalars(select(Contact.lead_id)).all() == ["L1"]
    assert published(app, MEMBERS) == []
    at = utcnow() - timedelta(days=1)
    feed(app, order("u1", "80.25", at=at), order("u1", 19.75, at=at + timedelta(hours=1)))
    c = contact(app, "L1")
    assert (c.is_member, c.orders_count, c.revenue_total) == (True, 2, Decimal("100.00"))
    assert (c.first_order_at, c.last_order_at, c.member_since) == (
        at,
        at + timedelta(hours=1),
        at,
    )
    events = published(app, MEMBERS)
    assert [e.payload["change"] for e in events] == ["enrolled"]
    assert events[0].payload["member"]["contact_id"] == "L1"


def test_orders_before_the_lead_is_known_count_once_it_arrives(app: Flask) -> None:
    """A browser buys before signing in (anonymous id), then signed in (user id); only
    then does lead-scoring name the person with both ids: both orders are theirs."""
    feed(app, anon_order("a1", "15"), order("u1", "35"), anon_order("a-other", "999"))
    assert published(app, MEMBERS) == []
    feed(app, stage("L1", "lead", anon=("a1",), user="u1"))
    c = contact(app, "L1")
    assert (c.is_member, c.orders_count, c.revenue_total) == (True, 2, Decimal("50.00"))
    assert [e.payload["change"] for e in published(app, MEMBERS)] == ["enrolled"]


def test_an_anonymous_order_counts_when_the_lead_names_the_browser(app: Flask) -> None:
    feed(app, stage("L1", "lead", email="a@x.co"), stage("L2", "lead", anon=("a2",)))
    feed(app, anon_order("a1", 40), anon_order("a2", 7))
    assert contact(app, "L1").orders_count == 0  # known, but not by this browser yet
    assert contact(app, "L2").orders_count == 1  # a browser already known: at once
    feed(app, stage("L1", "lead", email="a@x.co", anon=("a1",)))
    c = contact(app, "L1")
    assert (c.orders_count, c.revenue_total, c.is_member) == (1, Decimal("40.00"), True)


# ----------------------------------------------------------------------- hostile input


def test_a_huge_or_odd_products_list_never_dead_letters(app: Flask) -> None:
    huge = order("u1", 1, products=[{"product_id": f"p{i}", "category": "c"} for i in range(1000)])
    odd = order(
        "u1",
        1,
        products=[1, "p-text", None, ["p"], True, {"product_id": "ok", "category": "c"}],
    )
    useless = order("u1", 1, products=["a", 2, None])
    feed(app, huge, odd, useless)
    rows = products_of(app, huge[1].event_id)
    assert len(rows) == MAX_PRODUCTS == 50
    assert [r[0] for r in rows] == [f"p{i}" for i in range(50)]
    # Products that are not objects are skipped; with nothing usable, the event is one row.
    assert products_of(app, odd[1].event_id) == [("ok", None, "c")]
    assert products_of(app, useless[1].event_id) == [(None, None, None)]


def test_product_fields_of_any_shape_never_dead_letter(app: Flask) -> None:
    numbers = order(
        "u1",
        1,
        products=[
            {"product_id": 12345, "name": 7, "category": 3.5},
            {"product_id": 2**62, "category": True},
            {"product_id": {"id": "x"}, "name": ["n"], "category": "  "},
            {"product_id": False, "sku": 99},
        ],
    )
    # A products field that is not a list: the event's own product fields count.
    as_text = did("u1", "Product Added", products="p1,p2", product_id="p3")
    as_object = did("u1", "Product Added", products={"product_id": "p4"})
    long = "x" * 5000
    too_long = did("u1", "Product Viewed", product_id=long, name=f"  {long}", category=long)
    feed(app, numbers, as_text, as_object, too_long)
    assert products_of(app, numbers[1].event_id) == [
        ("12345", "7", "3.5"),
        (str(2**62), None, None),
        (None, None, None),
        ("99", None, None),
    ]
    assert products_of(app, as_text[1].event_id) == [("p3", None, None)]
    assert products_of(app, as_object[1].event_id) == [(None, None, None)]
    cut = "x" * 199 + "…"  # cut to 200 with the marker, as every stored text
    assert products_of(app, too_long[1].event_id) == [(cut, cut, cut)]


def test_a_nul_in_product_text_never_dead_letters(app: Flask) -> None:
    """Intake cleans text, but a replayed or an older producer's event may still carry a
    NUL; shared.limits says consumers apply the same cleaning where a value lands
    (``clean_text``: NUL becomes U+FFFD). PostgreSQL refuses NUL in text."""
    item = did("u1", "Product Viewed", product_id="p\x001", name="a\x00b", category="c")
    feed(app, item)
    assert products_of(app, item[1].event_id) == [("p\ufffd1", "a\ufffdb", "c")]


def test_a_lone_surrogate_in_product_text_never_dead_letters(app: Flask) -> None:
    """The same for a lone surrogate (valid in JSON escapes, not encodable as UTF-8):
    ``clean_text`` makes it U+FFFD."""
    item = did("u1", "Product Viewed", product_id="p1", name="bad\ud800name", category="c")
    feed(app, item)
    assert products_of(app, item[1].event_id) == [("p1", "bad\ufffdname", "c")]


def test_an_unusable_amount_loses_only_the_order(app: Flask) -> None:
    """An amount no order can hold (beyond the column, not a number) is not stored as an
    order, and is no dead letter either: what else the event says is kept."""
    beyond = order("u1", "1000000000000", products=[{"product_id": "p1"}])
    negative = order("u1", -(10**12))
    fits = order("u1", "999999999999.99")
    feed(app, beyond, negative, fits, did("u1", "Product Viewed", product_id=1))
    with state_of(app).sessions() as session:
        assert [o.revenue for o in session.scalars(select(Order))] == [Decimal("999999999999.99")]
    kept = {b.event_id for b in behaviours(app)}
    assert {beyond[1].event_id, negative[1].event_id, fits[1].event_id} <= kept


@pytest.mark.parametrize("revenue", [True, "lots", "1e999999", 10**13, [1], {"v": 1}])
def test_a_bad_amount_never_loses_the_consent_its_event_carries(app: Flask, revenue: Any) -> None:
    """Regression (review finding 11): an Order Completed with ``revenue: true`` was a dead
    letter, and the marketing withdrawal in its context was lost with it."""
    feed(app, consent("u1", at=utcnow() - timedelta(days=1), marketing=True))
    withdrawn = track(
        "Order Completed",
        {"revenue": revenue},
        user="u1",
        context={"consent": {"categoryPreferences": {"marketing": False}}},
    )
    feed(app, withdrawn)  # no dead letter
    assert ("user_id", "u1", "marketing", False) in consents(app)
    assert withdrawn[1].event_id in {b.event_id for b in behaviours(app)}
    with state_of(app).sessions() as session:
        assert session.scalars(select(Order)).all() == []


def consent_rows(app: Flask, value: str) -> list[tuple[str, bool]]:
    with state_of(app).sessions() as session:
        rows = session.scalars(
            select(Consent).where(Consent.value == value).order_by(Consent.at, Consent.id)
        )
        return [(r.purpose, r.granted) for r in rows]


def test_a_repeated_consent_header_does_not_grow_the_table(app: Flask) -> None:
    """Regression (review finding 12): every call carrying the consent manager's state
    added a row per purpose, for ever."""
    start = utcnow() - timedelta(days=10)
    feed(app, stage("L1", "lead", email="a@x.co", user="u1"))
    for day in range(10):
        at = start + timedelta(days=day)
        feed(app, consent("u1", at=at, marketing=True, advertising=False))
    # Each run of one decision: its first statement and its latest.
    rows = sorted(consent_rows(app, "u1"))
    assert rows == [("advertising", False), ("advertising", False)] + [("marketing", True)] * 2
    with state_of(app).sessions() as session:
        latest = session.scalar(select(func.max(Consent.at)).where(Consent.value == "u1"))
        assert latest is not None and latest.replace(tzinfo=UTC) == start + timedelta(days=9)
    # A change is a row; so is the first repeat after it.
    feed(app, consent("u1", at=start + timedelta(days=11), marketing=False))
    feed(app, consent("u1", at=start + timedelta(days=12), marketing=False))
    feed(app, consent("u1", at=start + timedelta(days=13), marketing=False))
    assert [r for r in consent_rows(app, "u1") if r[0] == "marketing"] == [
        ("marketing", True),
        ("marketing", True),
        ("marketing", False),
        ("marketing", False),
    ]


def test_consent_stays_what_every_decision_stored_would_say(app: Flask) -> None:
    """Whatever is not stored never changes the outcome: late and tied decisions."""
    now = utcnow()
    feed(app, stage("L1", "lead", email="a@x.co", user="u1", anon=("a1",)))
    for hours in (10, 9, 8):  # a run of grants
        feed(app, consent("u1", at=now - timedelta(hours=hours), marketing=True))
    # A denial arriving late, between the grants: older than the latest grant.
    feed(app, consent("u1", at=now - timedelta(hours=9, minutes=30), marketing=False))
    assert reachable(app) == ["L1"]
    # A tie at the latest grant's instant: a denial.
    feed(app, consent("u1", at=now - timedelta(hours=8), marketing=False))
    assert reachable(app) == []
    # The same grant again at that instant changes nothing; a newer one does.
    feed(app, consent("u1", at=now - timedelta(hours=8), marketing=True))
    assert reachable(app) == []
    feed(app, consent("a1", anonymous=True, at=now - timedelta(hours=1), marketing=True))
    assert reachable(app) == ["L1"]


def reachable(app: Flask) -> list[str]:
    from services.member_retargeting.people.policy import consented

    with state_of(app).sessions() as session:
        return list(session.scalars(select(Contact.lead_id).where(consented("marketing"))))


def test_an_event_applied_again_after_its_processed_id_is_gone_adds_nothing(app: Flask) -> None:
    """A replay from the topic's start after processed ids were pruned: the same order
    and behaviours are not stored twice (and no unique-key error dead-letters them)."""
    from services.member_retargeting.models import Behaviour, Order, processed_events

    bought = order("u1", 12, products=[{"product_id": "p1"}, {"product_id": "p2"}])
    feed(app, bought)
    with state_of(app).engine.begin() as conn:
        conn.execute(processed_events.delete())
    feed(app, bought)
    with state_of(app).sessions() as session:
        assert len(session.scalars(select(Order)).all()) == 1
        assert len(session.scalars(select(Behaviour)).all()) == 2


def test_a_purchase_from_a_browser_source_makes_no_member_and_no_revenue(app: Flask) -> None:
    """A browser's public key could send ``Order Completed`` for anyone: it is kept as a
    behaviour, never as an order (membership, revenue, lifetime value)."""
    browser = {"funnel": {"source_kind": "browser"}}
    feed(
        app,
        stage("L1", "lead", email="ada@example.com", user="u1"),
        track("Order Completed", {"revenue": 5000, "order_id": "o1"}, user="u1", context=browser),
    )
    person = contact(app, "L1")
    assert (person.is_member, person.orders_count, person.revenue_total) == (False, 0, 0)
    with state_of(app).engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Order)) == 0
    assert [b.event for b in behaviours(app)] == ["Order Completed"]
    assert [e for e in published(app, MEMBERS)] == []
    # The same order from a server source makes a member.
    feed(app, track("Order Completed", {"revenue": 50, "order_id": "o2"}, user="u1"))
    assert contact(app, "L1").is_member

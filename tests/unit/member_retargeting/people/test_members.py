"""Members on SQLite and PostgreSQL: enrolment with the first order, lifetime value,
tiers up at once and down only after retention (the daily review, driven forward in
time by calling it directly), and RFM quintiles and groups with a crafted population —
with ``member.updated`` events only for what changed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.member_retargeting.model.rfm import group
from services.member_retargeting.model.tiers import LIFETIME, TierRules
from services.member_retargeting.models import Contact, Order
from services.member_retargeting.people.members import review_tiers, score_rfm
from shared.db import utcnow
from shared.outbox import Outgoing
from shared.topics import MEMBERS
from tests.unit.member_retargeting.conftest import feed, order, published, stage, state_of

DAY = timedelta(days=1)
NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)

# ----------------------------------------------------------------------------- helpers


def member_events(app: Flask) -> list[tuple[str, str, str | None]]:
    """``(contact, change, tier)`` of each member.updated in the outbox, in order."""
    return [
        (e.payload["member"]["contact_id"], e.payload["change"], e.payload["member"]["tier"])
        for e in published(app, MEMBERS)
    ]


def contact(app: Flask, lead_id: str) -> Contact:
    with state_of(app).sessions() as session:
        found = session.get(Contact, lead_id)
        assert found is not None, lead_id
        session.expunge(found)
        return found


def changes(out: list[Outgoing]) -> dict[str, tuple[str, Any]]:
    """lead id → (change, the member snapshot) of returned events (one per contact)."""
    assert all(o.topic == MEMBERS and o.envelope.type == "member.updated" for o in out)
    result = {o.key: (o.envelope.payload["change"], o.envelope.payload["member"]) for o in out}
    assert len(result) == len(out), "one event per contact"
    return result


# -------------------------------------------------------------------------- enrolment


def test_the_first_completed_order_enrols_a_member(app: Flask) -> None:
    at = utcnow() - timedelta(days=3)
    feed(app, stage("L1", "lead", email="a@x.co", user="u1"), stage("L2", "mql", user="u2"))
    assert not contact(app, "L1").is_member
    assert published(app, MEMBERS) == []
    feed(app, order("u1", "40", at=at))
    [event] = published(app, MEMBERS)
    assert event.type == "member.updated"
    assert (event.payload["change"], event.payload["reason"]) == ("enrolled", "first purchase")
    assert event.user_id == "u1"
    member = event.payload["member"]
    assert (member["contact_id"], member["is_member"], member["orders"], member["revenue"]) == (
        "L1",
        True,
        1,
        Decimal("40.00"),
    )
    assert member["member_since"] == at
    c = contact(app, "L1")
    assert (c.is_member, c.member_since, c.first_order_at, c.tier) == (True, at, at, "member")
    # A second order enrols no one again; the lead without orders stays a lead.
    feed(app, order("u1", "10"))
    assert [e[:2] for e in member_events(app)] == [("L1", "enrolled")]
    assert not contact(app, "L2").is_member


def test_lifetime_value_and_order_count_are_historic(app: Flask) -> None:
    """Every order ever counts toward lifetime value; only the window's toward the tier."""
    now = utcnow()
    feed(
        app,
        stage("L1", "lead", user="u1"),
        order("u1", "1000", at=now - timedelta(days=800)),
        order("u1", "99.99", at=now - timedelta(days=400)),
        order("u1", "0.01", at=now - DAY),
        order("u2", "5000"),  # someone else's
    )
    c = contact(app, "L1")
    assert (c.orders_count, c.revenue_total) == (3, Decimal("1100.00"))
    assert (c.first_order_at, c.last_order_at) == (
        now - timedelta(days=800),
        now - DAY,
    )
    assert c.tier == "member"  # 0.01 spent in the last 365 days


def test_the_tier_rises_at_once_with_the_order_that_crosses_the_threshold(app: Flask) -> None:
    feed(app, stage("L1", "lead", user="u1"), order("u1", 300))
    assert [e[:2] for e in member_events(app)] == [("L1", "enrolled")]
    assert contact(app, "L1").tier == "member"
    feed(app, order("u1", "199.99"))
    assert contact(app, "L1").tier == "member"  # 499.99: not yet
    feed(app, order("u1", "0.01"))
    before = utcnow()
    feed(app, order("u1", 1500))
    assert [e for e in member_events(app) if e[1] == "tier"] == [
        ("L1", "tier", "silver"),
        ("L1", "tier", "gold"),
    ]
    assert len(member_events(app)) == 3  # and the enrolment
    last = published(app, MEMBERS)[-1].payload
    assert last["reason"].startswith("spent 2000")
    c = contact(app, "L1")
    assert c.tier == "gold" and c.tier_since is not None and c.tier_since >= before


def test_the_enrolment_event_carries_the_tier_the_member_starts_in(app: Flask) -> None:
    """A first order above every threshold enrols straight into the top tier, with one
    event (no separate tier change): that event is the only news of the member's tier,
    so its snapshot must hold it."""
    feed(app, stage("L1", "lead", user="u1"), order("u1", 2500))
    assert contact(app, "L1").tier == "gold"
    [event] = published(app, MEMBERS)
    assert event.payload["change"] == "enrolled"
    assert event.payload["member"]["tier"] == "gold"
    assert event.payload["member"]["tier_since"] is not None


def test_member_events_carry_amounts_as_stored_with_two_decimals(app: Flask) -> None:
    """Lifetime value is money: 0.10 + 0.20 is 0.30 in the event as in the table (a sum
    done in binary floating point, as SQLite does for NUMERIC, is 0.30000000000000004)."""
    feed(app, order("u1", "0.10"), order("u1", "0.20"))
    feed(app, stage("L1", "lead", user="u1"))
    [event] = published(app, MEMBERS)
    assert event.payload["member"]["revenue"] == Decimal("0.30")
    assert contact(app, "L1").revenue_total == Decimal("0.30")


# ------------------------------------------------------------------------ tier review


def test_review_lets_a_rolling_window_tier_fall_only_after_retention(app: Flask) -> None:
    now = utcnow()
    feed(
        app,
        *(stage(f"L{i}", "lead", user=f"u{i}") for i in (1, 2, 3, 4)),
        order("u1", 600, at=now - timedelta(days=300)),  # silver
        order("u2", 600, at=now - timedelta(days=300)),  # silver, and buys again later
        order("u3", 2500, at=now - timedelta(days=300)),  # gold
        order("u4", 100, at=now - timedelta(days=300)),  # member: nothing to fall from
    )
    rules = state_of(app).config.tiers
    assert (rules.window_days, rules.retention_days) == (365, 365)
    reached = contact(app, "L1").tier_since
    assert reached is not None
    with state_of(app).sessions.begin() as session:
        session.add(
            Order(
                event_id="later",
                user_id="u2",
                revenue=Decimal(600),
                occurred_at=reached + timedelta(days=200),
            )
        )
    with state_of(app).sessions.begin() as session:
        # The window no longer holds the orders, but the tiers are kept for a year.
        assert review_tiers(session, rules, reached + timedelta(days=200)) == []
        assert review_tiers(session, rules, reached + timedelta(days=364)) == []
    assert [contact(app, f"L{i}").tier for i in (1, 2, 3, 4)] == [
        "silver",
        "silver",
        "gold",
        "member",
    ]
    later = reached + timedelta(days=366)
    with state_of(app).sessions.begin() as session:
        out = changes(review_tiers(session, rules, later, chunk=1))
    # L1 falls to what the window earns; L3 several tiers at once; L2's later order keeps it.
    assert {k: (change, m["tier"]) for k, (change, m) in out.items()} == {
        "L1": ("tier", "member"),
        "L3": ("tier", "member"),
    }
    assert [contact(app, f"L{i}").tier for i in (1, 2, 3, 4)] == [
        "member",
        "silver",
        "member",
        "member",
    ]
    assert contact(app, "L1").tier_since == later
    with state_of(app).sessions.begin() as session:
        assert review_tiers(session, rules, later + DAY) == []  # nothing left to fall


def test_review_never_lowers_a_lifetime_tier(app: Flask) -> None:
    feed(app, stage("L1", "lead", user="u1"), order("u1", 2500, at=utcnow() - DAY))
    lifetime = TierRules(window=LIFETIME)
    with state_of(app).sessions.begin() as session:
        assert review_tiers(session, lifetime, utcnow() + timedelta(days=5000)) == []
    assert contact(app, "L1").tier == "gold"


# --------------------------------------------------------------------------------- RFM

# A crafted population of ten members: (days since the last order, orders). The order of
# recency and of frequency are chosen so that every RFM group occurs once ntile(5) has
# ranked them (two members per quintile).
POPULATION: dict[str, tuple[int, int]] = {
    "A": (100, 1),
    "B": (90, 7),
    "C": (80, 3),
    "D": (70, 5),
    "E": (60, 6),
    "F": (50, 8),
    "G": (40, 4),
    "H": (30, 9),
    "I": (20, 2),
    "J": (10, 10),
}
# lead id → (R, F, group)
EXPECTED: dict[str, tuple[int, int, str]] = {
    "A": (1, 1, "Lost"),
    "B": (1, 4, "At Risk"),
    "C": (2, 2, "Hibernating"),
    "D": (2, 3, "At Risk"),
    "E": (3, 3, "Loyal"),
    "F": (3, 4, "Loyal"),
    "G": (4, 2, "Potential Loyalists"),
    "H": (4, 5, "Champions"),
    "I": (5, 1, "New"),
    "J": (5, 5, "Champions"),
}
# Revenue ranks apart from frequency: M is its own score.
REVENUE = {
    k: Decimal(v)
    for k, v in zip("ABCDEFGHIJ", (900, 50, 700, 10, 500, 20, 300, 40, 100, 30), strict=True)
}


def ntile(ordered: list[str], buckets: int = 5) -> dict[str, int]:
    """SQL's ntile: the first ``n % buckets`` buckets take one row more."""
    size, extra = divmod(len(ordered), buckets)
    out, position = {}, 0
    for bucket in range(1, buckets + 1):
        for _ in range(size + (bucket <= extra)):
            out[ordered[position]] = bucket
            position += 1
    return out


def add_member(session: Session, lead_id: str, days: int | None, orders: int, **kw: Any) -> None:
    values: dict[str, Any] = {
        "stage": "customer",
        "score": 0,
        "is_member": True,
        "orders_count": orders,
        "revenue_total": REVENUE.get(lead_id, Decimal(0)),
        "last_order_at": None if days is None else NOW - timedelta(days=days),
        "traits": {},
        "intent": {},
    }
    values.update(kw)
    session.add(Contact(lead_id=lead_id, **values))


def rfm_of(app: Flask) -> dict[str, tuple[int | None, int | None, int | None, str | None]]:
    with state_of(app).sessions() as session:
        return {
            c.lead_id: (c.rfm_recency, c.rfm_frequency, c.rfm_monetary, c.rfm_group)
            for c in session.scalars(select(Contact))
        }


def test_score_rfm_ranks_members_into_quintiles_and_names_their_groups(app: Flask) -> None:
    with state_of(app).sessions.begin() as session:
        for lead_id, (days, orders) in POPULATION.items():
            add_member(session, lead_id, days, orders)
        # Neither a lead nor a merged-away member is ranked (nor shifts anyone's rank).
        add_member(session, "LEAD", None, 0, is_member=False, stage="mql")
        add_member(session, "MERGED", 1, 50, merged_into="J")
    with state_of(app).sessions.begin() as session:
        out = changes(score_rfm(session, NOW))
    monetary = ntile(sorted(REVENUE, key=lambda k: (REVENUE[k], k)))
    scores = rfm_of(app)
    assert scores == {
        **{k: (r, f, monetary[k], name) for k, (r, f, name) in EXPECTED.items()},
        "LEAD": (None, None, None, None),
        "MERGED": (None, None, None, None),
    }
    # The named groups are the model's, and every group of the grid occurs here.
    assert all(group(r, f) == name for r, f, name in EXPECTED.values())
    assert len({name for *_, name in EXPECTED.values()}) == 7
    # Everyone ranked for the first time changed group: one event each.
    assert set(out) == set(POPULATION)
    change, member = out["H"]
    assert change == "rfm_group"
    assert (member["rfm_group"], member["rfm"]) == (
        "Champions",
        {"recency": 4, "frequency": 5, "monetary": monetary["H"]},
    )


def test_score_rfm_emits_events_only_for_members_whose_group_changed(app: Flask) -> None:
    with state_of(app).sessions.begin() as session:
        for lead_id, (days, orders) in POPULATION.items():
            add_member(session, lead_id, days, orders)
    with state_of(app).sessions.begin() as session:
        assert len(score_rfm(session, NOW)) == len(POPULATION)
    with state_of(app).sessions.begin() as session:
        assert score_rfm(session, NOW) == []  # nothing changed
    # J now has the fewest orders (tied with A; the lead id breaks the tie): frequency
    # shifts for everyone between, but only J, I and G land in another group.
    with state_of(app).sessions.begin() as session:
        j = session.get(Contact, "J")
        assert j is not None
        j.orders_count = 1
    with state_of(app).sessions.begin() as session:
        out = changes(score_rfm(session, NOW))
    assert {k: m["rfm_group"] for k, (_, m) in out.items()} == {
        "J": "New",
        "I": "Potential Loyalists",
        "G": "Loyal",
    }
    scores = rfm_of(app)
    assert (scores["I"][1], scores["C"][1], scores["C"][3]) == (2, 2, "Hibernating")
    with state_of(app).sessions.begin() as session:
        assert score_rfm(session, NOW) == []


def test_a_member_who_never_ordered_is_the_least_recent(app: Flask) -> None:
    """A customer by stage is a member without an order (no last order). Recency is
    about the last purchase, so they rank below everyone who bought — on every database
    alike (PostgreSQL sorts NULL last in ascending order, SQLite first)."""
    feed(app, stage("NOORDER", "customer"))
    assert contact(app, "NOORDER").is_member
    assert contact(app, "NOORDER").last_order_at is None
    with state_of(app).sessions.begin() as session:
        for lead_id, (days, orders) in POPULATION.items():
            add_member(session, lead_id, days, orders)
    with state_of(app).sessions.begin() as session:
        score_rfm(session, NOW)
    scores = rfm_of(app)
    assert scores["NOORDER"][0] == 1
    assert scores["J"][0] == 5  # the most recent buyer

"""The funnel projection through the real runner batch, on SQLite and PostgreSQL: visits
become journeys, leads take in their visits, merges fold, stages and membership count;
the report reads it back."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from flask import Flask
from sqlalchemy import delete, func, select

from services.member_retargeting.models import Journey, JourneyIdentity
from services.member_retargeting.people.funnel import funnel_report, purchase_precursors
from services.member_retargeting.processing.journeys import prune
from shared.db import utcnow
from shared.events import Envelope, new_event
from shared.topics import LEADS, PRIVACY, TRAFFIC
from tests.unit.member_retargeting.conftest import did, feed, order, snapshot, stage, state_of

NOW = utcnow()
GOOGLE = {"channel": "organic_search", "engine": "google"}
ADS = {"channel": "paid_search", "engine": "google", "utm_campaign": "spring"}


def visit(
    source: dict[str, Any] | None,
    path: str = "/",
    *,
    anon: str | None = None,
    user: str | None = None,
    at: datetime | None = None,
) -> tuple[str, Envelope]:
    context: dict[str, Any] = {"page": {"url": f"https://shop.example{path}"}}
    if source is not None:
        context["traffic_source"] = source
    return TRAFFIC, new_event(
        "page",
        {"properties": {}},
        source="web",
        anonymous_id=anon,
        user_id=user,
        context=context,
        occurred_at=at or NOW - timedelta(hours=2),
    )


def merged(survivor: dict[str, Any], gone: str) -> tuple[str, Envelope]:
    payload = {"lead": survivor, "merged_lead_id": gone, "reason": "same person"}
    return LEADS, new_event("lead.merged", payload, source="lead-scoring")


def report(app: Flask, days: int = 30) -> dict[str, Any]:
    """The report up to now (lead events made in the test are stamped when made, which in
    a long run is well after this module's ``NOW``)."""
    with state_of(app).sessions() as session:
        return funnel_report(session, NOW - timedelta(days=days), utcnow() + timedelta(minutes=1))


def counts(found: dict[str, Any]) -> list[int]:
    return [s["count"] for s in found["stages"]]


def test_an_anonymous_visit_becomes_the_leads_journey_with_its_first_touch(app: Flask) -> None:
    feed(
        app,
        visit(GOOGLE, "/blog/seo-guide", anon="a1", at=NOW - timedelta(days=3)),
        visit({"channel": "internal"}, "/pricing", anon="a1", at=NOW - timedelta(days=2)),
        visit(ADS, "/landing", anon="b1"),  # somebody else
    )
    assert counts(report(app))[:2] == [2, 0]
    feed(app, stage("L1", "lead", email="a@x.co", anon=("a1",), user="u1"))
    found = report(app)
    assert counts(found) == [2, 1, 0, 0, 0, 0]
    organic = next(r for r in found["by_channel"] if r["channel"] == "organic_search")
    assert [s["count"] for s in organic["stages"]][:2] == [1, 1]
    assert found["by_landing_page"][0]["landing_page"] in {"/blog/seo-guide", "/landing"}
    assert {r["landing_page"] for r in found["by_landing_page"]} == {"/blog/seo-guide", "/landing"}
    assert [r["campaign"] for r in found["by_campaign"]] == ["spring"]
    assert found["median_seconds"]["visitor_to_lead"] > 2 * 86400


def test_lead_events_before_traffic_end_on_one_journey(app: Flask) -> None:
    feed(app, stage("L1", "mql", email="a@x.co", anon=("a1",), user="u1"))
    feed(app, visit(GOOGLE, "/guide", anon="a1", at=NOW - timedelta(days=5)))
    feed(app, visit(None, "/account", user="u1", at=NOW - timedelta(days=1)))
    with state_of(app).sessions() as session:
        live = session.scalars(select(Journey).where(Journey.merged_into.is_(None))).all()
        assert len(live) == 1
        assert (live[0].lead_id, live[0].channel, live[0].landing_page) == (
            "L1",
            "organic_search",
            "/guide",
        )
        assert live[0].first_seen_at == NOW - timedelta(days=5)
    assert counts(report(app)) == [1, 1, 1, 0, 0, 0]


def test_a_merge_folds_two_journeys_keeping_the_earliest_touch(app: Flask) -> None:
    feed(
        app,
        visit(ADS, "/ads", anon="a2", at=NOW - timedelta(days=1)),
        visit(GOOGLE, "/seo", anon="a1", at=NOW - timedelta(days=4)),
        stage("L1", "lead", email="a@x.co", anon=("a1",)),
        stage("L2", "mql", email="a@x.co", anon=("a2",)),
    )
    assert counts(report(app))[:3] == [2, 2, 1]
    feed(app, merged(snapshot("L1", "mql", email="a@x.co", anon=("a1", "a2")), "L2"))
    found = report(app)
    assert counts(found)[:3] == [1, 1, 1]
    assert [r["channel"] for r in found["by_channel"]] == ["organic_search"]
    with state_of(app).sessions() as session:
        ids = session.execute(
            select(JourneyIdentity.value, Journey.lead_id).join(
                Journey, Journey.id == JourneyIdentity.journey_id
            )
        ).all()
        assert sorted(ids) == [("a1", "L1"), ("a2", "L1")]


def test_a_merge_seen_before_the_merged_leads_events_still_counts_one_person(app: Flask) -> None:
    feed(app, merged(snapshot("L1", "lead", email="a@x.co", anon=("a1",)), "L2"))
    feed(app, stage("L2", "mql", email="a@x.co", anon=("a2",)))  # late, other partition
    assert counts(report(app))[:3] == [1, 1, 1]


def test_reaching_a_stage_counts_for_every_stage_before_it(app: Flask) -> None:
    feed(
        app,
        stage("L1", "customer", email="a@x.co", user="u1"),
        stage("L2", "opportunity", email="b@x.co", user="u2"),
        stage("L3", "disqualified", email="c@x.co", user="u3"),
        order("u1", 40),  # a server order: a member
    )
    assert counts(report(app)) == [3, 2, 2, 2, 1, 1]


def test_the_window_is_of_first_visits(app: Flask) -> None:
    feed(
        app,
        visit(GOOGLE, anon="old", at=NOW - timedelta(days=40)),
        visit(GOOGLE, anon="new", at=NOW - timedelta(days=1)),
    )
    assert counts(report(app, days=30))[0] == 1
    assert counts(report(app, days=60))[0] == 2


def test_redelivered_traffic_is_one_journey(app: Flask) -> None:
    event = visit(GOOGLE, anon="a1")
    feed(app, event)
    feed(app, event, visit(GOOGLE, anon="a1", at=NOW - timedelta(hours=1)))
    with state_of(app).sessions() as session:
        assert session.scalar(select(func.count()).select_from(Journey)) == 1


def test_products_and_intent_that_come_before_a_purchase(app: Flask) -> None:
    feed(
        app,
        stage("L1", "customer", email="a@x.co", user="u1", intent={"seo": 30, "crm": 0}),
        stage("L2", "mql", email="b@x.co", user="u2", intent={"seo": 5}),
        stage("L3", "mql", email="c@x.co", user="u3", intent={"ads": 9}),
        did("u1", "Product Viewed", at=NOW - timedelta(days=2), product_id="p1", name="Audit"),
        did("u2", "Product Viewed", at=NOW - timedelta(days=2), product_id="p1", name="Audit"),
        did("u3", "Product Added", at=NOW - timedelta(days=2), product_id="p2", name="Pro"),
        order("u1", 99),
        did("u1", "Product Viewed", product_id="p9", name="After"),  # after: not before
    )
    with state_of(app).sessions() as session:
        found = purchase_precursors(session, NOW - timedelta(days=30), utcnow() + timedelta(1))
    assert found["buyers"] == 1
    assert [(p["product"], p["buyers"], p["looked"]) for p in found["products"]] == [
        ("Audit", 1, 2)
    ]
    assert found["products"][0]["bought_after_looking"] == 0.5
    topics = {i["topic"]: (i["people"], i["buyers"]) for i in found["intents"]}
    assert topics == {"seo": (2, 1), "ads": (1, 0)}  # "crm" at 0 points is no interest


def test_a_skipped_stage_is_reached_at_the_same_moment(app: Flask) -> None:
    """Identified above the MQL threshold, a lead goes subscriber → MQL at once; a buyer
    can go straight to customer: the steps between count as 0 s, not as missing."""
    feed(app, visit(GOOGLE, anon="a1", at=NOW - timedelta(hours=3)))
    feed(app, stage("L1", "mql", email="a@x.co", anon=("a1",)))
    with state_of(app).sessions() as session:
        journey = session.scalar(select(Journey).where(Journey.lead_id == "L1"))
        assert journey is not None
        assert journey.lead_at == journey.mql_at and journey.sql_at is None
    medians = report(app)["median_seconds"]
    assert medians["lead_to_mql"] == 0 and medians["visitor_to_lead"] >= 3 * 3600 - 5


def test_a_look_before_the_window_is_not_a_precursor(app: Flask) -> None:
    feed(
        app,
        stage("L1", "customer", email="a@x.co", user="u1"),
        did("u1", "Product Viewed", at=NOW - timedelta(days=10), product_id="p1", name="Old"),
        did("u1", "Product Viewed", at=NOW - timedelta(days=1), product_id="p2", name="New"),
        order("u1", 99),
    )
    with state_of(app).sessions() as session:
        found = purchase_precursors(session, NOW - timedelta(days=7), utcnow() + timedelta(1))
    assert [(p["product"], p["bought_after_looking"]) for p in found["products"]] == [("New", 1.0)]


def split(survivor: dict[str, Any], split_off: dict[str, Any]) -> tuple[str, Envelope]:
    payload = {"lead": survivor, "split_lead": split_off, "reason": "wrong", "changed_by": "rep"}
    return LEADS, new_event("lead.split", payload, source="lead-scoring")


def live(app: Flask) -> dict[str | None, Journey]:
    with state_of(app).sessions() as session:
        rows = session.scalars(select(Journey).where(Journey.merged_into.is_(None))).all()
        session.expunge_all()
        return {j.lead_id: j for j in rows}


def test_a_split_gives_each_side_its_own_stage_back(app: Flask) -> None:
    feed(
        app,
        visit(GOOGLE, "/seo", anon="a1", at=NOW - timedelta(days=4)),
        visit(ADS, "/ads", anon="a2", at=NOW - timedelta(days=1)),
        stage("S", "lead", email="s@x.co", anon=("a1",), user="s"),
        stage("M", "customer", email="m@x.co", anon=("a2",), user="m"),
        merged(snapshot("S", "customer", email="s@x.co", anon=("a1", "a2"), user="s"), "M"),
    )
    assert counts(report(app))[:5] == [1, 1, 1, 1, 1]
    feed(
        app,
        split(
            snapshot("S", "lead", email="s@x.co", anon=("a1",), user="s"),
            snapshot("M", "customer", email="m@x.co", anon=("a2",), user="m"),
        ),
    )
    assert counts(report(app))[:2] == [2, 2]  # (membership is the contacts': kept)
    journeys = live(app)
    assert (journeys["S"].reached, journeys["S"].customer_at) == (1, None)
    assert (journeys["M"].channel, journeys["M"].landing_page) == ("paid_search", "/ads")


def test_an_identifier_split_keeps_the_first_touch_it_came_with(app: Flask) -> None:
    feed(
        app,
        visit(GOOGLE, "/seo", anon="a1", at=NOW - timedelta(days=4)),
        stage("S", "lead", email="s@x.co", anon=("a1", "a9"), user="s"),
    )
    feed(
        app,
        split(
            snapshot("S", "lead", email="s@x.co", anon=("a1",), user="s"),
            snapshot("N", "subscriber", anon=("a9",)),  # a new lead for the identifier
        ),
    )
    journeys = live(app)
    assert journeys["N"].first_seen_at == NOW - timedelta(days=4)
    assert journeys["N"].channel == "organic_search" and journeys["N"].reached == 0


def test_a_shared_browser_does_not_make_two_users_one_journey(app: Flask) -> None:
    feed(
        app,
        visit(GOOGLE, anon="shared", user="u1"),
        stage("L1", "lead", email="a@x.co", anon=("shared",), user="u1"),
        visit(ADS, anon="shared", user="u2"),  # someone else signs in on the same browser
    )
    with state_of(app).sessions() as session:
        rows = session.execute(select(JourneyIdentity.value, JourneyIdentity.journey_id))
        owners = {value: journey_id for value, journey_id in rows}
    assert owners["u2"] != owners["u1"] == owners["shared"]
    assert counts(report(app))[0] == 2


def test_an_older_snapshot_moves_no_ids(app: Flask) -> None:
    feed(app, stage("L1", "lead", email="a@x.co", anon=("a1",), user="u1", version=5))
    feed(app, visit(GOOGLE, anon="a2"))
    feed(app, stage("L1", "lead", email="a@x.co", anon=("a1", "a2"), user="u1", version=4))
    assert counts(report(app))[0] == 2  # a2's visit stays its own


def test_erasure_takes_the_persons_journeys_and_no_one_elses(app: Flask) -> None:
    feed(
        app,
        visit(GOOGLE, anon="shared", user="u1"),
        stage("L1", "lead", email="a@x.co", anon=("shared",), user="u1"),
        visit(ADS, anon="mine", user="u2"),
        visit(ADS, anon="shared", user="u2"),
        stage("L2", "lead", email="b@x.co", anon=("mine",), user="u2"),
    )
    request = {
        "request_id": "r1",
        "identifiers": [{"kind": "user_id", "value": "u2"}],
        "requested_by": "admin",
    }
    feed(app, (PRIVACY, new_event("privacy.erasure_requested", request, source="lead-scoring")))
    journeys = live(app)
    assert set(journeys) == {"L1"}
    with state_of(app).sessions() as session:
        values = set(session.scalars(select(JourneyIdentity.value)))
    assert "u2" not in values and "mine" not in values and "u1" in values


def test_journeys_that_are_no_leads_are_pruned_past_retention_with_their_ids(
    app: Flask,
) -> None:
    cutoff = NOW - timedelta(days=730)
    old = cutoff - timedelta(days=5)
    feed(
        app,
        visit(GOOGLE, "/old", anon="gone", at=old - timedelta(days=1)),  # never a lead: pruned
        visit(ADS, "/ads", anon="recent", at=NOW - timedelta(days=3)),  # kept
        visit(GOOGLE, "/seo", anon="became", at=old),  # folded into L's: pruned, L keeps it
        stage("L", "lead", email="l@x.co", anon=("became",), user="l"),
    )
    with state_of(app).sessions.begin() as session:
        assert prune(session, cutoff, limit=1) == 1  # the oldest first, by the limit
        folded = select(Journey).where(Journey.lead_id.is_(None), Journey.merged_into.is_not(None))
        assert session.scalar(folded) is not None
        assert prune(session, cutoff, limit=10) == 1
        assert prune(session, cutoff, limit=10) == 0
    with state_of(app).sessions() as session:
        rows = session.execute(select(JourneyIdentity.value, JourneyIdentity.journey_id))
        ids = {value: journey_id for value, journey_id in rows}
        kept = {j.id: j for j in session.scalars(select(Journey))}
        assert set(ids) == {"recent", "became", "l"}
        assert set(ids.values()) <= set(kept)
        assert sorted(j.lead_id or j.landing_page for j in kept.values()) == ["/ads", "L"]
        (lead,) = [j for j in kept.values() if j.lead_id == "L"]
        assert (lead.first_seen_at, lead.landing_page) == (old, "/seo")
    # The pruned visitor, back: a new journey, first seen now.
    feed(app, visit(ADS, "/back", anon="gone", at=NOW))
    with state_of(app).sessions() as session:
        back = session.scalar(
            select(Journey)
            .join(JourneyIdentity, JourneyIdentity.journey_id == Journey.id)
            .where(JourneyIdentity.value == "gone")
        )
        assert back is not None and (back.first_seen_at, back.landing_page) == (NOW, "/back")


def test_an_id_whose_journey_was_pruned_under_it_joins_the_next_one(app: Flask) -> None:
    # The prune (another transaction) deleted the journey while this id was joining it.
    feed(app, visit(GOOGLE, "/", anon="a1", at=NOW - timedelta(days=1)))
    with state_of(app).sessions.begin() as session:
        session.execute(delete(Journey))
    feed(app, visit(ADS, "/back", anon="a1", at=NOW))
    feed(app, visit(ADS, "/again", anon="a1", at=NOW + timedelta(minutes=1)))
    with state_of(app).sessions() as session:
        (journey,) = session.scalars(select(Journey)).all()  # one, not one per event
        row = session.get(JourneyIdentity, ("anonymous_id", "a1"))
        assert row is not None and row.journey_id == journey.id

"""Product affinity on SQLite and PostgreSQL, from e-commerce events fed through the real
handlers: viewed 1, added 3, bought 5, per product and category, strongest first, over a
window, through every identifier of the person."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from flask import Flask

from services.member_retargeting.people.affinity import WEIGHTS, Affinity, affinities
from shared.db import utcnow
from shared.events import Envelope, new_event
from shared.topics import TRAFFIC
from tests.unit.member_retargeting.conftest import did, feed, order, stage, state_of

DAY = timedelta(days=1)


def anon_did(anon: str, event: str, **properties: Any) -> tuple[str, Envelope]:
    return TRAFFIC, new_event(
        "track", {"event": event, "properties": properties}, source="web", anonymous_id=anon
    )


def affinity_of(
    app: Flask, ids: list[str], now: datetime | None = None, **kw: Any
) -> dict[str, Affinity]:
    with state_of(app).sessions() as session:
        return affinities(session, ids, now or utcnow(), **kw)


def test_the_weights_are_viewed_1_added_3_bought_5() -> None:
    assert WEIGHTS == {"Product Viewed": 1, "Product Added": 3, "Order Completed": 5}


def test_weights_add_up_per_product_and_per_category(app: Flask) -> None:
    shoe: dict[str, Any] = {"product_id": "p1", "name": "Red Shoe", "category": "shoes"}
    feed(
        app,
        stage("L1", "lead", user="u1"),
        did("u1", "Product Viewed", **shoe),
        did("u1", "Product Added", **shoe),
        order("u1", 80, products=[shoe, {"product_id": "p9", "category": "socks"}]),
        did("u1", "Product Viewed", product_id="p2", category="hats"),
        did("u1", "Product Viewed", product_id="p2", category="hats"),
        did("u1", "Product Added", product_id="p3", category="shoes"),
        # Not e-commerce weights: ignored.
        did("u1", "Product Removed", product_id="p2", category="hats"),
        did("u1", "Signed Up", product_id="p2", category="hats"),
    )
    [(contact_id, affinity)] = affinity_of(app, ["L1"]).items()
    assert contact_id == "L1"
    # The name when the event gives one, else the id.
    assert affinity.products == [("Red Shoe", 9), ("p9", 5), ("p3", 3), ("p2", 2)]
    assert affinity.categories == [("shoes", 12), ("socks", 5), ("hats", 2)]
    assert affinity.top_product == "Red Shoe"


def test_ranking_breaks_ties_by_name_and_keeps_the_top(app: Flask) -> None:
    feed(
        app,
        stage("L1", "lead", user="u1"),
        *(
            did("u1", "Product Added", product_id=p, category=c)
            for p, c in [("b", "x"), ("a", "y"), ("d", "z"), ("c", "w"), ("e", "v"), ("f", "u")]
        ),
        did("u1", "Product Viewed", product_id="f", category="u"),
    )
    affinity = affinity_of(app, ["L1"])["L1"]
    assert affinity.products == [("f", 4), ("a", 3), ("b", 3), ("c", 3), ("d", 3)]
    assert affinity.categories == [("u", 4), ("v", 3), ("w", 3), ("x", 3), ("y", 3)]
    assert affinity_of(app, ["L1"], top=2)["L1"].products == [("f", 4), ("a", 3)]


def test_only_the_window_counts(app: Flask) -> None:
    now = utcnow()
    feed(
        app,
        stage("L1", "lead", user="u1"),
        did("u1", "Product Added", at=now - 100 * DAY, product_id="old", category="c1"),
        did("u1", "Product Viewed", at=now - 89 * DAY, product_id="recent", category="c2"),
        did("u1", "Product Viewed", at=now - 90 * DAY, product_id="edge", category="c2"),
    )
    assert affinity_of(app, ["L1"], now)["L1"].products == [("edge", 1), ("recent", 1)]
    assert affinity_of(app, ["L1"], now, days=120)["L1"].products == [
        ("old", 3),
        ("edge", 1),
        ("recent", 1),
    ]
    assert affinity_of(app, ["L1"], now, days=30) == {}


def test_every_identifier_of_the_person_counts_and_no_one_elses(app: Flask) -> None:
    feed(
        app,
        anon_did("a1", "Product Viewed", product_id="p1", category="c"),  # before sign-in
        stage("L1", "lead", user="u1", anon=("a1",)),
        stage("L2", "lead", user="u2"),
        stage("L3", "lead", user="u3"),
        did("u1", "Product Added", product_id="p1", category="c"),
        did("u2", "Product Viewed", product_id="p2"),
        did("u3", "Signed Up"),  # no e-commerce: left out
        did("stranger", "Order Completed", product_id="p1", category="c"),
        anon_did("a-other", "Product Added", product_id="p1", category="c"),
    )
    result = affinity_of(app, ["L1", "L2", "L3", "L-unknown"])
    assert set(result) == {"L1", "L2"}
    assert result["L1"] == Affinity([("p1", 4)], [("c", 4)])
    # A product without a category still counts as a product.
    assert result["L2"] == Affinity([("p2", 1)], [])
    assert affinity_of(app, ["L2"]).keys() == {"L2"}  # only who is asked for
    assert affinity_of(app, []) == {}


def test_an_order_without_products_gives_no_affinity(app: Flask) -> None:
    feed(app, stage("L1", "lead", user="u1"), order("u1", 10))
    assert affinity_of(app, ["L1"]) == {}

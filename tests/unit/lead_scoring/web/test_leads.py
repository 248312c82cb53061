"""The sales API on leads: lists, detail, auth and bad input."""

from __future__ import annotations

import pytest
from flask import Flask

from shared.events import new_event
from tests.unit.lead_scoring.conftest import SALES, Feeder


def seed(feed: Feeder) -> None:
    for i, n in enumerate([1, 3, 6]):
        for _ in range(n):
            feed(new_event("page", {"properties": {"path": "/"}}, source="w", anonymous_id=f"a{i}"))
    feed(
        new_event(
            "identify", {"traits": {"email": "b@x.co"}}, source="w", anonymous_id="a1", user_id="u1"
        )
    )
    feed(new_event("track", {"event": "Form Submitted"}, source="w", user_id="u1"))


def test_leads_sorted_by_score_filtered_and_paginated(scoring_app: Flask, feed: Feeder) -> None:
    seed(feed)
    client = scoring_app.test_client()
    body = client.get("/leads", headers=SALES).json
    assert [x["score"] for x in body["items"]] == [58, 6, 1]
    assert body["total"] == 3
    body = client.get("/leads?stage=mql", headers=SALES).json
    assert [x["email"] for x in body["items"]] == ["b@x.co"]
    body = client.get("/leads?min_score=5&sort=score", headers=SALES).json
    assert [x["score"] for x in body["items"]] == [6, 58]
    body = client.get("/leads?page=2&page_size=2", headers=SALES).json
    assert ([x["score"] for x in body["items"]], body["total"]) == ([1], 3)


def test_lead_detail_explains_every_point(scoring_app: Flask, feed: Feeder) -> None:
    seed(feed)
    client = scoring_app.test_client()
    top = client.get("/leads", headers=SALES).json["items"][0]
    detail = client.get(f"/leads/{top['id']}", headers=SALES).json
    points = detail["score_explained"]["points"]
    assert sum(p["points"] for p in points) == detail["score"] == 58
    assert {p["rule_id"] for p in points} == {"page-view", "identified", "form-submitted"}
    assert all(p["event_id"] and p["event_type"] for p in points)
    assert [c["to_stage"] for c in detail["stage_history"]] == ["lead", "mql"]
    assert detail["recent_events"][0]["name"] == "Form Submitted"
    assert detail["anonymous_ids"] == ["a1"]


def test_auth_roles_and_bad_input(scoring_app: Flask) -> None:
    client = scoring_app.test_client()
    assert client.get("/leads").status_code == 401
    assert client.get("/leads", headers={"Authorization": "Bearer nope"}).status_code == 401
    wrong_role = client.get("/leads", headers={"Authorization": "Bearer marketing-t"})
    assert wrong_role.status_code == 403
    assert wrong_role.json["error"]["code"] == "forbidden"
    assert client.get("/leads/x", headers={"Authorization": "Bearer admin-t"}).status_code == 403


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("stage=hot", "stage"),
        ("min_score=lots", "min_score"),
        ("page=0", "page"),
        ("page_size=1000", "page_size"),
        ("sort=name", "sort"),
        ("color=red", "color"),
    ],
)
def test_bad_query_is_422_naming_the_field(scoring_app: Flask, query: str, field: str) -> None:
    response = scoring_app.test_client().get(f"/leads?{query}", headers=SALES)
    assert response.status_code == 422
    assert field in response.json["error"]["fields"]


def test_unknown_lead_is_404(scoring_app: Flask) -> None:
    response = scoring_app.test_client().get("/leads/nope", headers=SALES)
    assert response.status_code == 404
    assert response.json["error"]["code"] == "not_found"


def test_sales_sort_by_priority_fit_first_then_engagement(scoring_app: Flask, feed: Feeder) -> None:
    def person(user: str, title: str, views: int) -> None:
        feed(
            new_event(
                "identify",
                {"traits": {"email": f"{user}@x.co", "title": title, "country": "TW"}},
                source="w",
                user_id=user,
            )
        )
        for _ in range(views):
            feed(new_event("page", {"properties": {"path": "/"}}, source="w", user_id=user))

    person("cto", "CTO", 1)  # fit 20 → C
    person("intern", "Intern", 30)  # fit 5 → D, but busy
    feed(
        new_event(
            "group",
            {"group_id": "acme", "traits": {"industry": "SaaS", "employees": 900}},
            source="w",
            user_id="cto",
        )
    )
    body = scoring_app.test_client().get("/leads", headers=SALES).json
    assert [(x["email"], x["fit_grade"]) for x in body["items"]] == [
        ("cto@x.co", "A"),
        ("intern@x.co", "D"),
    ]
    top = body["items"][0]
    assert top["priority"] == "A4" and top["engagement"] == pytest.approx(6, abs=0.1)
    only_d = scoring_app.test_client().get("/leads?fit_grade=D", headers=SALES).json
    assert [x["email"] for x in only_d["items"]] == ["intern@x.co"]
    detail = scoring_app.test_client().get(f"/leads/{top['id']}", headers=SALES).json
    assert {r["label"] for r in detail["fit_reasons"]} >= {"Decision maker", "Target industry"}


def test_a_sales_read_does_not_queue_behind_the_consumer(sqlite_url: str) -> None:
    """GET requests read without SQLite's write lock: a lead page answers at once while
    the consumer's batch holds the lock (it used to wait in SQLite's busy back-off, up to
    0.7 s under load), and shows the last committed score."""
    from services.lead_scoring.app import create_app, init_db
    from services.lead_scoring.config import ScoringConfig
    from services.lead_scoring.state import STATE
    from shared.db import make_engine
    from tests.unit.lead_scoring.conftest import TOKENS

    app = create_app(ScoringConfig(database_url=sqlite_url, tokens=TOKENS))
    init_db(app.extensions[STATE].engine)
    feed = Feeder(app)
    seed(feed)
    client = app.test_client()
    top = client.get("/leads", headers=SALES).json["items"][0]
    consumer = make_engine(sqlite_url)
    with consumer.begin() as batch:  # holds the write lock for the whole GET
        batch.exec_driver_sql("UPDATE leads SET score = score + 100")
        during = client.get(f"/leads/{top['id']}", headers=SALES)
    consumer.dispose()
    assert during.status_code == 200
    assert during.json["score"] == top["score"]  # the batch in flight is not seen
    assert client.get(f"/leads/{top['id']}", headers=SALES).json["score"] == top["score"] + 100

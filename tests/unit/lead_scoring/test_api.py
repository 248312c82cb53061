from __future__ import annotations

import pytest
from flask import Flask

from services.lead_scoring.state import STATE as SCORING_STATE
from shared.events import new_event
from tests.unit.lead_scoring.conftest import Feeder

SALES = {"Authorization": "Bearer sales-t"}


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


def test_pages_need_a_configured_sales_token_and_rotation_signs_out(database_url: str) -> None:
    from services.lead_scoring.app import create_app, init_db
    from services.lead_scoring.config import ScoringConfig
    from shared.config import Tokens

    def app_with(sales: str):
        app = create_app(
            ScoringConfig(
                database_url=database_url,
                tokens=Tokens(sales=sales),
                secret_key="fixed-for-the-test",
            )
        )
        init_db(app.extensions[SCORING_STATE].engine)
        return app

    first = app_with("old-token").test_client()
    assert first.post("/app/login", data={"token": "old-token"}).status_code == 302
    assert first.get("/app/leads").status_code == 200
    cookie = first.get_cookie("session")
    assert cookie is not None
    rotated = app_with("new-token").test_client()  # same secret, the sales token rotated
    rotated.set_cookie("session", cookie.value)
    assert rotated.get("/app/leads").status_code == 302  # back to sign-in
    nobody = app_with("").test_client()  # no sales token: nobody may use the pages
    nobody.set_cookie("session", cookie.value)
    assert nobody.get("/app/leads").status_code == 302
    assert nobody.post("/app/login", data={"token": ""}).status_code == 401

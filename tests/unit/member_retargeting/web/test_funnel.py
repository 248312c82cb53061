"""The funnel API and page: marketing only, a window checked where it enters, the
report's numbers on the page and in its chart."""

from __future__ import annotations

from datetime import timedelta

from flask import Flask

from shared.db import utcnow
from tests.helpers import page_login
from tests.unit.member_retargeting.conftest import MARKETING, feed, order, stage
from tests.unit.member_retargeting.processing.test_journeys import ADS, GOOGLE, visit


def test_only_marketing_reads_the_funnel(app: Flask) -> None:
    client = app.test_client()
    for path in ("/funnel", "/funnel/precursors"):
        assert client.get(path).status_code == 401
        assert client.get(path, headers={"Authorization": "Bearer sales-t"}).status_code == 403
        assert client.get(path, headers=MARKETING).status_code == 200


def test_a_bad_window_is_a_422_naming_the_field(app: Flask) -> None:
    client = app.test_client()
    now = utcnow()
    cases = {
        "since=yesterday": "since",
        f"since={now.isoformat()}&until={(now - timedelta(days=1)).isoformat()}": "since",
        f"since={(now - timedelta(days=900)).isoformat()}&until={now.isoformat()}": "since",
        "until=2026-01-01T00:00:00": "until",  # no offset: ambiguous
        "days=3": "days",
        "since=2000-01-01T00:00:00%2B00:00": "since",  # until defaults to now: > 400 days
    }
    for query, field in cases.items():
        response = client.get(f"/funnel?{query.replace('+', '%2B')}", headers=MARKETING)
        assert response.status_code == 422, (query, response.json)
        assert field in response.json["error"]["fields"], (query, response.json)
    only_since = (now - timedelta(days=1)).isoformat().replace("+", "%2B")
    response = client.get(f"/funnel?since={only_since}", headers=MARKETING)
    assert response.status_code == 200


def test_the_api_answers_the_report(app: Flask) -> None:
    feed(
        app,
        visit(GOOGLE, "/guide", anon="a1"),
        visit(ADS, "/ads", anon="a2"),
        stage("L1", "customer", email="a@x.co", anon=("a1",), user="u1"),
        order("u1", 10),
    )
    body = app.test_client().get("/funnel", headers=MARKETING).json
    assert [s["count"] for s in body["stages"]] == [2, 1, 1, 1, 1, 1]
    assert body["stages"][1]["rate_from_previous"] == 0.5
    assert [r["channel"] for r in body["by_channel"]] == ["organic_search", "paid_search"]
    assert {(r["channel"], r["engine"]) for r in body["by_source"]} == {
        ("organic_search", "google"),
        ("paid_search", "google"),
    }
    assert body["sampled"] is False


def test_the_page_shows_the_chart_and_the_breakdowns(app: Flask) -> None:
    feed(
        app,
        visit(GOOGLE, "/guide", anon="a1"),
        visit(ADS, "/ads", anon="a2"),
        stage("L1", "mql", email="a@x.co", anon=("a1",), user="u1"),
    )
    client = app.test_client()
    page_login(client, "marketing-t")
    html = client.get("/app/funnel?days=7").get_data(as_text=True)
    assert 'data-stage="visitor" data-count="2"' in html
    assert 'data-stage="mql" data-count="1"' in html
    assert 'data-channel="organic_search"' in html and 'data-channel="paid_search"' in html
    assert "/guide" in html and "spring" in html
    assert "last 7 days" in html
    assert client.get("/app/funnel?days=abc").status_code == 200  # falls back to 30

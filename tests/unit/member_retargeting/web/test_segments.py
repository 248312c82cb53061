"""The segments API: built-ins seeded with live counts, saved rules, previews with a
count and a sample, validation that names the bad part of a rule."""

from __future__ import annotations

from datetime import timedelta

import pytest
from flask import Flask

from services.member_retargeting.models import Segment
from shared.db import utcnow
from tests.unit.member_retargeting.conftest import (
    MARKETING,
    consent,
    did,
    feed,
    seed,
    stage,
    state_of,
)

CART = {
    "all": [
        {"event": "Product Added", "within_days": 3},
        {"not": {"event": "Order Completed", "within_days": 3}},
    ]
}


def test_builtins_are_listed_first_with_live_counts(app: Flask) -> None:
    now = utcnow()
    feed(
        app,
        stage("A", "lead", email="a@x.co", user="a"),
        stage("B", "lead", email="b@x.co", user="b"),
        did("a", "Product Added", product_id="p", at=now - timedelta(days=1)),
        did("b", "Product Added", product_id="p", at=now - timedelta(days=1)),
        did("b", "Order Completed", revenue=5, at=now - timedelta(hours=1)),
    )
    client = app.test_client()
    saved = client.post("/segments", headers=MARKETING, json={"name": "all", "rule": {"all": []}})
    assert saved.status_code == 201 and saved.json["count"] == 2
    items = client.get("/segments", headers=MARKETING).json["items"]
    names = [s["name"] for s in items]
    assert names[:4] == sorted(
        ["Cart abandoners", "Lapsed members", "VIPs", "Hot leads who did not buy"]
    )
    assert names[4:] == ["all"] and [s["builtin"] for s in items] == [True] * 4 + [False]
    counts = {s["name"]: s["count"] for s in items}
    assert counts["Cart abandoners"] == 1  # A; B bought


def test_preview_counts_and_samples_who_a_rule_matches(app: Flask) -> None:
    seed(app)
    response = app.test_client().post(
        "/segments/preview",
        headers=MARKETING,
        json={"rule": {"attribute": "stage", "op": "in", "value": ["mql", "lead"]}},
    )
    assert response.status_code == 200
    assert response.json["count"] == 3
    assert sorted(p["contact_id"] for p in response.json["sample"]) == ["L1", "L3", "L4"]


def test_preview_sample_is_bounded(app: Flask) -> None:
    feed(app, *(stage(f"P{i:02}", "lead", user=f"p{i}") for i in range(15)))
    feed(app, *(consent(f"p{i}", marketing=True) for i in range(15)))
    body = (
        app.test_client()
        .post("/segments/preview", headers=MARKETING, json={"rule": {"all": []}})
        .json
    )
    assert (body["count"], len(body["sample"])) == (15, 10)


@pytest.mark.parametrize(
    ("rule", "field"),
    [
        ({"all": [{"attribute": "colour", "op": "eq", "value": "red"}]}, "rule.all.0.attribute"),
        ({"any": [CART, {"event": "x", "within_days": 0}]}, "rule.any.1.within_days"),
        ({"not": {"attribute": "stage", "op": "eq", "value": "hot"}}, "rule.not.value"),
        ({"attribute": "score", "op": "gte", "value": "high"}, "rule.value"),
        ({"all": [], "any": []}, "rule"),
        ([], "rule"),
    ],
)
def test_a_bad_rule_is_named_by_its_path(app: Flask, rule: object, field: str) -> None:
    client = app.test_client()
    for url, body in (
        ("/segments/preview", {"rule": rule}),
        ("/segments", {"name": "x", "rule": rule}),
    ):
        response = client.post(url, headers=MARKETING, json=body)
        assert response.status_code == 422
        assert field in response.json["error"]["fields"], response.json


def test_names_are_unique_and_builtins_stay(app: Flask) -> None:
    client = app.test_client()
    body = {"name": "Cart people", "rule": CART, "description": "3 days"}
    created = client.post("/segments", headers=MARKETING, json=body)
    assert created.status_code == 201
    assert client.post("/segments", headers=MARKETING, json=body).status_code == 409
    got = client.get(f"/segments/{created.json['id']}", headers=MARKETING).json
    assert (got["rule"], got["description"]) == (CART, "3 days")
    builtin = client.get("/segments", headers=MARKETING).json["items"][0]
    assert client.delete(f"/segments/{builtin['id']}", headers=MARKETING).status_code == 409
    assert client.delete(f"/segments/{created.json['id']}", headers=MARKETING).status_code == 204
    assert client.get(f"/segments/{created.json['id']}", headers=MARKETING).status_code == 404
    assert client.get("/segments", headers={"Authorization": "Bearer sales-t"}).status_code == 403


# Regression (review finding 7): valid JSON with hostile values was a 500.
HOSTILE_RULES = [
    ({"attribute": "days_since_last_order", "op": "gte", "value": 10**7}, "rule.value"),
    ({"attribute": "days_since_last_order", "op": "lt", "value": 1e300}, "rule.value"),
    ({"attribute": "score", "op": "gt", "value": 10**30}, "rule.value"),
    ({"attribute": "revenue", "op": "gt", "value": 10**30}, "rule.value"),
    ({"attribute": "tier", "op": "eq", "value": "a\u0000b"}, "rule.value"),
    ({"attribute": "tier", "op": "eq", "value": "a\ud800b"}, "rule.value"),
    ({"event": "x\u0000", "within_days": 3}, "rule.event"),
    ({"all": [{"event": "x", "category": "\ud800"}]}, "rule.all.0.category"),
]


@pytest.mark.parametrize(("rule", "field"), HOSTILE_RULES)
def test_hostile_rule_values_are_a_422_naming_the_part(app: Flask, rule: dict, field: str) -> None:
    seed(app)
    client = app.test_client()
    for path, body in [
        ("/segments/preview", {"rule": rule}),
        ("/segments", {"name": "hostile", "rule": rule}),
    ]:
        response = client.post(path, headers=MARKETING, json=body)
        assert response.status_code == 422, (path, response.json)
        assert field in response.json["error"]["fields"], response.json


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "a\u0000b", "rule": {"all": []}}, "name"),
        ({"name": "a\ud800b", "rule": {"all": []}}, "name"),
        ({"name": "ok", "rule": {"all": []}, "description": "a\u0000b"}, "description"),
        ({"name": "ok", "rule": {"all": []}, "description": "\udc00"}, "description"),
    ],
)
def test_names_nul_or_lone_surrogates_are_a_422(app: Flask, body: dict, field: str) -> None:
    response = app.test_client().post("/segments", headers=MARKETING, json=body)
    assert response.status_code == 422 and field in response.json["error"]["fields"]


def test_a_stored_rule_that_no_longer_holds_never_breaks_the_list(app: Flask) -> None:
    """A rule saved before these checks (or by an older version) shows as broken."""
    with state_of(app).sessions.begin() as session:
        session.add(
            Segment(
                name="old",
                rule={"attribute": "days_since_last_order", "op": "gte", "value": 10**7},
            )
        )
    client = app.test_client()
    listed = client.get("/segments", headers=MARKETING)
    assert listed.status_code == 200
    old = next(s for s in listed.json["items"] if s["name"] == "old")
    assert old["count"] is None
    assert client.get(f"/segments/{old['id']}", headers=MARKETING).json["count"] is None

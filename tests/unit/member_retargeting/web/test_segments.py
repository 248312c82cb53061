"""The segments API: built-ins seeded with live counts, saved rules, previews with a
count and a sample, validation that names the bad part of a rule."""

from __future__ import annotations

from datetime import timedelta

import pytest
from flask import Flask

from shared.db import utcnow
from tests.unit.member_retargeting.conftest import MARKETING, consent, did, feed, seed, stage

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

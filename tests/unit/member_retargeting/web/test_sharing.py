"""The sharing API: export a segment as a hashed audience, the suppression list (hashes
only), and per person which destinations received their data and when."""

from __future__ import annotations

import pytest
from flask import Flask

from tests.unit.member_retargeting.conftest import (
    MARKETING,
    consent,
    create,
    feed,
    stage,
    trigger,
    work_runs,
)


def test_per_person_marketing_sees_every_destination_that_received_their_data(
    app: Flask,
) -> None:
    feed(
        app,
        stage("A", "lead", email="a@x.co", user="a", traits={"phone": "+14155550100"}),
        consent("a", marketing=True, advertising=True),
    )
    client = app.test_client()
    mail = create(client, {"all": []}, name="mail")
    sms = create(client, {"all": []}, name="sms", channel="sms", kind="transactional")
    for campaign in (mail, sms):
        trigger(client, campaign)
        work_runs(app)
    export = client.post(
        "/audiences/exports", headers=MARKETING, json={"platform": "meta", "rule": {"all": []}}
    )
    assert export.status_code == 201 and export.json["people"] == 1
    assert export.json["requested_by"] == "marketing"
    ledger = client.get("/people/A/sharing", headers=MARKETING).json
    assert ledger["contact_id"] == "A"
    destinations = [(i["destination"], i["purpose"]) for i in ledger["items"]]
    assert destinations == [
        ("meta:custom_audience", "advertising"),
        ("sms", "marketing"),
        ("email", "marketing"),
    ]
    assert "phone" in ledger["items"][1]["fields"] and "email" not in ledger["items"][1]["fields"]
    assert client.get("/people/nobody/sharing", headers=MARKETING).json["items"] == []


def test_exports_of_a_saved_segment_and_bad_requests(app: Flask) -> None:
    client = app.test_client()
    builtins = client.get("/segments", headers=MARKETING).json["items"]
    vip = next(s for s in builtins if s["name"] == "VIPs")
    ok = client.post(
        "/audiences/exports",
        headers=MARKETING,
        json={"platform": "google", "segment_id": vip["id"]},
    )
    assert ok.status_code == 201 and ok.json["people"] == 0
    for body, field in [
        ({"platform": "tiktok", "rule": {"all": []}}, "platform"),
        ({"platform": "meta"}, "rule"),
        ({"platform": "meta", "rule": {"all": []}, "segment_id": 1}, "rule"),
        ({"platform": "meta", "rule": {"event": ""}}, "rule.event"),
    ]:
        response = client.post("/audiences/exports", headers=MARKETING, json=body)
        assert response.status_code == 422 and field in response.json["error"]["fields"], body
    missing = client.post(
        "/audiences/exports", headers=MARKETING, json={"platform": "meta", "segment_id": 999}
    )
    assert missing.status_code == 404


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"email": "x@y.co"}, 422, "reason"),
        ({"reason": "asked"}, 422, "email"),
        ({"email": "x@y.co", "phone": "+14155550100", "reason": "asked"}, 422, "email"),
        ({"email": "not an email", "reason": "asked"}, 422, "email"),
        ({"phone": "12", "reason": "asked"}, 422, "phone"),
    ],
)
def test_bad_suppressions_name_the_field(app: Flask, body: dict, status: int, field: str) -> None:
    response = app.test_client().post("/suppressions", headers=MARKETING, json=body)
    assert response.status_code == status and field in response.json["error"]["fields"]


def test_suppressions_are_kept_as_hashes_and_can_be_lifted(app: Flask) -> None:
    client = app.test_client()
    first = client.post(
        "/suppressions",
        headers=MARKETING,
        json={"phone": "0912 345 678", "region": "TW", "reason": "asked"},
    )
    assert first.status_code == 201 and first.json["kind"] == "phone"
    again = client.post(
        "/suppressions", headers=MARKETING, json={"phone": "+886912345678", "reason": "again"}
    )
    assert again.status_code == 409  # the same number, written differently
    listed = client.get("/suppressions", headers=MARKETING).json["items"]
    assert [s["value_hash"] for s in listed] == [first.json["value_hash"]]
    assert "912" not in str(listed)
    assert client.delete(f"/suppressions/{first.json['id']}", headers=MARKETING).status_code == 204
    assert client.get("/suppressions", headers=MARKETING).json["items"] == []
    assert client.delete(f"/suppressions/{first.json['id']}", headers=MARKETING).status_code == 404


# Regression (review finding 7): a NUL or a lone surrogate reached PostgreSQL (a 500).
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "a@b.co", "reason": "abc\u0000"}, "reason"),
        ({"email": "a@b.co", "reason": "abc\ud800"}, "reason"),
        ({"email": "a\u0000@b.co", "reason": "asked"}, "email"),
        ({"phone": "+1 415 555 0100\ud800", "reason": "asked"}, "phone"),
        ({"phone": "0912 345 678", "region": "T\u0000", "reason": "asked"}, "region"),
    ],
)
def test_hostile_suppressions_are_a_422(app: Flask, body: dict, field: str) -> None:
    response = app.test_client().post("/suppressions", headers=MARKETING, json=body)
    assert response.status_code == 422 and field in response.json["error"]["fields"]


def test_a_reason_may_have_line_breaks(app: Flask) -> None:
    body = {"email": "a@b.co", "reason": "Asked on the phone:\nnever again"}
    assert app.test_client().post("/suppressions", headers=MARKETING, json=body).status_code == 201


@pytest.mark.parametrize("contact_id", ["a%00b", "x" * 5000])
def test_no_contact_id_in_the_path_is_a_500(app: Flask, contact_id: str) -> None:
    response = app.test_client().get(f"/people/{contact_id}/sharing", headers=MARKETING)
    assert response.status_code == 200 and response.json["items"] == []

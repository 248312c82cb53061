"""The identity rules admin API: read, replace (validated), admin only; a new version
decides how later events resolve."""

from __future__ import annotations

import copy
import inspect

import pytest
from flask import Flask
from sqlalchemy import select

from services.lead_scoring.models import Lead
from services.lead_scoring.state import STATE as SCORING_STATE
from tests.unit.lead_scoring.conftest import ADMIN, SALES, Feeder
from tests.unit.lead_scoring.processing.test_identity import Clock, identify, page


def _rules(app: Flask) -> dict:
    response = app.test_client().get("/admin/identity/rules", headers=ADMIN)
    assert response.status_code == 200
    return response.json


def test_the_defaults_never_put_two_user_ids_on_one_lead(scoring_app: Flask) -> None:
    body = _rules(scoring_app)
    assert body["version"] == 0
    by_kind = {r["kind"]: r for r in body["document"]["rules"]}
    assert by_kind["user_id"]["limit"] == 1 and by_kind["user_id"]["on_limit"] == "refuse"
    assert by_kind["anonymous_id"]["follows_latest"] is True


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda d: d["rules"].pop(0), "rules"),  # no user_id rule
        (lambda d: d["rules"][0].update(kind="phone"), "rules.0.kind"),
        (lambda d: d["rules"][1].update(priority=1), "rules"),
        (lambda d: d["rules"][0].update(limit=0), "rules.0.limit"),
        (lambda d: d["rules"][0].update(merge="sometimes"), "rules.0.merge"),
        (lambda d: d["rules"].append(dict(d["rules"][0])), "rules"),
    ],
)
def test_bad_identity_rules_are_422_naming_the_field(scoring_app: Flask, change, field) -> None:
    document = copy.deepcopy(_rules(scoring_app)["document"])
    change(document)
    response = scoring_app.test_client().put("/admin/identity/rules", headers=ADMIN, json=document)
    assert response.status_code == 422
    assert field in response.json["error"]["fields"], response.json


def test_identity_rules_are_admin_only(scoring_app: Flask) -> None:
    client = scoring_app.test_client()
    assert client.get("/admin/identity/rules", headers=SALES).status_code == 403
    assert client.get("/admin/identity/rules").status_code == 401


def test_a_new_version_decides_later_events(scoring_app: Flask, feed: Feeder) -> None:
    """With e-mail merges limited to a trusted source, an identify from the website no
    longer merges an anonymous visitor into the known person with that e-mail."""
    document = copy.deepcopy(_rules(scoring_app)["document"])
    email = next(r for r in document["rules"] if r["kind"] == "email")
    email.update(merge="trusted", trusted_sources=["crm"])
    response = scoring_app.test_client().put(
        "/admin/identity/rules", headers=ADMIN, json={**document, "note": "no web merges"}
    )
    assert response.status_code == 200 and response.json["version"] == 1
    inspect.unwrap(feed.processor.handlers["funnel.traffic"]).keywords[
        "rules"
    ].identity.invalidate()
    clock = Clock()
    feed(identify(clock, "ada@x.co", user_id="ada"))
    feed(page(clock, anonymous_id="stranger"))
    feed(identify(clock, "ada@x.co", anonymous_id="stranger"))  # source "web": not trusted
    with scoring_app.extensions[SCORING_STATE].sessions() as s:
        live = s.scalars(select(Lead).where(Lead.merged_into.is_(None))).all()
    assert len(live) == 2
    detail = (
        scoring_app.test_client()
        .get(f"/leads/{next(x.id for x in live if x.user_id is None)}", headers=SALES)
        .json
    )
    [conflict] = detail["conflicts"]
    assert (conflict["kind"], conflict["value"], conflict["source"]) == ("email", "ada@x.co", "web")
    assert "may not merge" in conflict["reason"]
    assert {i["kind"] for i in detail["identities"]} == {"anonymous_id"}

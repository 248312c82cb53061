"""Hashed audiences: only people with advertising consent who are not suppressed, each
identifier normalised and SHA-256-hashed as the platform wants, published in parts, one
ledger line per person; an ads campaign's run exports the same way, chunk by chunk."""

from __future__ import annotations

import hashlib
import json

import pytest
from flask import Flask
from sqlalchemy import select

from services.member_retargeting.model.segments import parse
from services.member_retargeting.models import SharingRecord, outbox
from services.member_retargeting.sharing import exports
from services.member_retargeting.sharing.exports import export_segment
from shared.db import utcnow
from shared.topics import DISPATCH
from tests.unit.member_retargeting.conftest import (
    MARKETING,
    consent,
    create,
    feed,
    published,
    stage,
    state_of,
    trigger,
    work_runs,
)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def population(app: Flask) -> None:
    feed(
        app,
        stage(
            "A",
            "lead",
            email=" John.Smith@Gmail.com ",
            user="a",
            traits={"phone": "(650) 555-1212", "country": "us", "firstName": "John"},
        ),
        stage("B", "lead", email="b@x.co", user="b"),  # ads denied
        stage("C", "lead", email="c@x.co", user="c"),  # never said
        stage("D", "lead", user="d"),  # consents, but nothing to match on
        stage("E", "lead", email="e@x.co", user="e"),  # consents, suppressed
        consent("a", advertising=True, marketing=False),
        consent("b", advertising=False, marketing=True),
        consent("d", advertising=True),
        consent("e", advertising=True),
    )
    response = app.test_client().post(
        "/suppressions", headers=MARKETING, json={"email": "E@x.co", "reason": "complaint"}
    )
    assert response.status_code == 201


@pytest.mark.parametrize(
    ("platform", "email", "phone"),
    [
        # Google drops the dots of a gmail.com local part; Meta keeps them.
        ("google", "johnsmith@gmail.com", "+16505551212"),
        ("meta", "john.smith@gmail.com", "16505551212"),
    ],
)
def test_only_consenting_matchable_people_leave_and_only_as_hashes(
    app: Flask, platform: str, email: str, phone: str
) -> None:
    population(app)
    with state_of(app).sessions.begin() as session:
        export = export_segment(
            session, parse({"all": []}), platform, requested_by="mkt", now=utcnow()
        )
        export_id = export.id
    assert export.people == 1
    [batch] = published(app, DISPATCH)
    assert batch.type == "audience.batch" and batch.payload["platform"] == platform
    [row] = batch.payload["rows"]
    values = list(row.values())
    assert sha(email) in values and sha(phone) in values
    assert sha("john") in values
    # Nothing plain: every value a digest, except Google's plain country code.
    plain = [v for v in values if v and len(v) != 64]
    assert plain == (["US"] if platform == "google" else [])
    with state_of(app).engine.connect() as conn:
        raw = conn.execute(select(outbox.c.value)).scalar_one()
    # (The phone's own digits: "650" alone turns up in timestamps and hex digests.)
    assert b"Smith" not in raw and b"5551212" not in raw and b"@" not in raw
    with state_of(app).sessions() as session:
        [line] = session.scalars(select(SharingRecord)).all()
        assert (line.contact_id, line.export_id, line.purpose) == ("A", export_id, "advertising")
        assert line.destination.startswith(platform)
        assert all(f.startswith("sha256(") for f in line.fields)


def test_large_audiences_go_out_in_parts(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(exports, "PART", 4)
    feed(
        app,
        *(stage(f"P{i:02}", "lead", email=f"p{i}@x.co", user=f"p{i}") for i in range(10)),
        *(consent(f"p{i}", advertising=True) for i in range(10)),
    )
    with state_of(app).sessions.begin() as session:
        export_segment(session, parse({"all": []}), "meta", requested_by="m", now=utcnow())
    batches = published(app, DISPATCH)
    assert [b.payload["part"] for b in batches] == [0, 1, 2]
    assert [len(b.payload["rows"]) for b in batches] == [4, 4, 2]
    assert len({b.event_id for b in batches}) == 3


def test_an_ads_campaign_run_exports_its_consenting_recipients(app: Flask) -> None:
    population(app)
    client = app.test_client()
    campaign = create(client, {"all": []}, channel="ads", message={"platform": "google"})
    trigger(client, campaign)
    work_runs(app)
    batches = [b for b in published(app, DISPATCH) if b.type == "audience.batch"]
    assert sum(len(b.payload["rows"]) for b in batches) == 1
    assert not [e for e in published(app, DISPATCH) if e.type == "campaign.dispatch"]
    report = client.get(f"/campaigns/{campaign['id']}/report", headers=MARKETING).json
    assert (report["dispatched_count"], report["skipped_count"]) == (1, 4)
    exported = client.get("/audiences/exports", headers=MARKETING).json["items"]
    assert [(x["platform"], x["people"]) for x in exported] == [("google", 1)]
    assert json.dumps(exported).count("@") == 0


def test_each_chunk_of_an_ads_run_is_a_part_of_its_own(app: Flask) -> None:
    """Regression: parts were numbered by rows/1000, so every chunk of a run reused part 0's
    event id and the outbox dropped all but the first as a duplicate."""
    feed(
        app,
        *(stage(f"P{i:02}", "lead", email=f"p{i}@x.co", user=f"p{i}") for i in range(60)),
        *(consent(f"p{i}", advertising=True) for i in range(60)),
    )
    client = app.test_client()
    campaign = create(client, {"all": []}, channel="ads", message={"platform": "meta"})
    trigger(client, campaign)
    work_runs(app)  # the app's chunk is 50: two chunks
    batches = published(app, DISPATCH)
    assert [b.payload["part"] for b in batches] == [0, 1]
    assert [len(b.payload["rows"]) for b in batches] == [50, 10]


def test_an_ads_run_says_why_each_was_skipped_and_who_started_it(app: Flask) -> None:
    """Regression (review finding 10): an ads run's skips were one reason
    (``no_consent_or_match``) and its ledger lines named ``run:<id>``, not the person who
    started the run."""
    population(app)
    client = app.test_client()
    campaign = create(client, {"all": []}, channel="ads", message={"platform": "meta"})
    trigger(client, campaign)
    work_runs(app)
    report = client.get(f"/campaigns/{campaign['id']}/report", headers=MARKETING).json
    assert report["skipped"] == {"no_consent": 2, "no_address": 1, "suppressed": 1}
    assert report["dispatched_count"] == 1
    with state_of(app).sessions() as session:
        [line] = session.scalars(select(SharingRecord)).all()
    assert (line.contact_id, line.requested_by) == ("A", "marketing")
    assert line.destination == "meta:custom_audience" and line.campaign_id == campaign["id"]

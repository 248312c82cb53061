"""Campaign runs: the audience fixed at start, chunks, the checks at send time with every
skip recorded by reason, exactly once per recipient across a failed chunk; SQLite and
PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from flask import Flask
from sqlalchemy import func, select

from services.member_retargeting.campaigns.runs import Limits, start, work
from services.member_retargeting.models import Campaign, CampaignRun, Dispatch, SharingRecord
from shared.db import utcnow
from shared.topics import DISPATCH
from tests.unit.member_retargeting.conftest import (
    MARKETING,
    consent,
    create,
    did,
    feed,
    published,
    seed,
    stage,
    state_of,
    work_runs,
)


def people(app: Flask, count: int, *, marketing: bool | None = True) -> None:
    """``count`` leads P000… with e-mail, user id and the given marketing decision."""
    events = [stage(f"P{i:03}", "lead", email=f"p{i}@x.co", user=f"p{i}") for i in range(count)]
    if marketing is not None:
        events += [consent(f"p{i}", marketing=marketing) for i in range(count)]
    feed(app, *events)


def trigger(app: Flask, campaign: dict, key: str | None = None) -> dict:
    headers = {**MARKETING, **({"Idempotency-Key": key} if key else {})}
    response = app.test_client().post(f"/campaigns/{campaign['id']}/trigger", headers=headers)
    assert response.status_code == 202, response.json
    return response.json


def report(app: Flask, campaign: dict) -> dict:
    return app.test_client().get(f"/campaigns/{campaign['id']}/report", headers=MARKETING).json


def test_a_run_goes_in_chunks_with_progress(app: Flask) -> None:
    people(app, 120)  # the app's chunk is 50
    campaign = create(app.test_client(), {"all": []})
    run = trigger(app, campaign)
    assert run["audience_size"] == 120
    state = state_of(app)
    limits = Limits(per_day=5, per_week=10, chunk=50)
    sizes = []
    for _ in range(4):
        with state.sessions.begin() as session:
            row = session.get(CampaignRun, run["run_id"])
            assert row is not None
            sizes.append(work(session, row, limits, utcnow()))
            progress = (row.status, row.processed)
        if sizes[-1]:
            assert len(published(app, DISPATCH)) == sum(sizes)
    assert sizes == [50, 50, 20, 0]
    assert progress == ("done", 120)


def test_every_skipped_recipient_is_recorded_with_its_reason(app: Flask) -> None:
    feed(
        app,
        stage("A", "lead", email="a@x.co", user="a"),  # consents: sent
        stage("B", "lead", email="b@x.co", user="b"),  # never said: no consent
        stage("C", "lead", email="c@x.co", user="c"),  # denied
        stage("D", "lead", email="Dee@X.co", user="d"),  # suppressed (by its normal form)
        stage("E", "lead", user="e"),  # no e-mail
        consent("a", marketing=True),
        consent("c", marketing=False),
        consent("d", marketing=True),
        consent("e", marketing=True),
    )
    client = app.test_client()
    suppressed = client.post(
        "/suppressions", headers=MARKETING, json={"email": " dee@x.co", "reason": "asked us"}
    )
    assert suppressed.status_code == 201
    assert "dee" not in str(suppressed.json)  # only the hash is kept
    campaign = create(client, {"all": []})
    trigger(app, campaign)
    work_runs(app)
    assert [e.payload["contact_id"] for e in published(app, DISPATCH)] == ["A"]
    body = report(app, campaign)
    assert body["skipped"] == {"no_consent": 2, "suppressed": 1, "no_address": 1}
    assert (body["audience_size"], body["dispatched_count"], body["skipped_count"]) == (5, 1, 4)
    with state_of(app).sessions() as session:
        ledger = session.execute(select(SharingRecord.contact_id, SharingRecord.destination))
        assert ledger.all() == [("A", "email")]  # only what was sent is shared


def test_the_frequency_cap_holds_across_campaigns_and_spares_transactional_ones(
    app: Flask,
) -> None:
    seed(app)  # L1, L2, L4 reachable by e-mail, all consenting
    client = app.test_client()
    first = create(client, {"all": []}, name="first")
    second = create(client, {"all": []}, name="second")
    receipt = create(client, {"all": []}, name="receipt", kind="transactional")
    for campaign in (first, second, receipt):
        trigger(app, campaign)
        work_runs(app)
    assert report(app, first)["dispatched_count"] == 3
    assert report(app, second)["skipped"] == {"frequency_cap": 3, "no_address": 1}
    assert report(app, receipt)["dispatched_count"] == 3  # exempt from the cap
    sent = published(app, DISPATCH)
    assert [e.payload["kind"] for e in sent].count("transactional") == 3


def test_consent_is_checked_when_sending_not_when_the_run_starts(app: Flask) -> None:
    seed(app)
    campaign = create(app.test_client(), {"all": []})
    trigger(app, campaign)
    feed(app, consent("u1", marketing=False))  # withdrawn after the trigger
    work_runs(app)
    assert sorted(e.payload["contact_id"] for e in published(app, DISPATCH)) == ["L2", "L4"]


def test_the_audience_is_fixed_when_the_run_starts(app: Flask) -> None:
    seed(app)
    campaign = create(app.test_client(), {"attribute": "stage", "op": "eq", "value": "lead"})
    run = trigger(app, campaign)
    feed(app, stage("L1", "lead", email="mql@x.co", user="u1"))  # joins the segment late
    work_runs(app)
    assert run["audience_size"] == 1
    assert [e.payload["contact_id"] for e in published(app, DISPATCH)] == ["L4"]


def test_a_failed_chunk_is_done_again_exactly_once(app: Flask) -> None:
    """A chunk is one transaction: a crash inside it leaves nothing behind, and the next
    pass sends each of its recipients once."""
    people(app, 30)
    campaign = create(app.test_client(), {"all": []})
    run = trigger(app, campaign)
    state = state_of(app)
    limits = Limits(per_day=5, per_week=10, chunk=20)
    with pytest.raises(RuntimeError), state.sessions.begin() as session:
        row = session.get(CampaignRun, run["run_id"])
        assert row is not None
        assert work(session, row, limits, utcnow()) == 20
        raise RuntimeError("killed mid-chunk")
    assert published(app, DISPATCH) == []
    work_runs(app)
    ids = [e.payload["contact_id"] for e in published(app, DISPATCH)]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 30
    with state.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Dispatch)) == 30


def test_a_concurrent_start_with_the_same_key_returns_the_first_run(app: Flask) -> None:
    people(app, 3)
    state = state_of(app)
    with state.sessions.begin() as session:
        campaign = Campaign(
            name="c", segment={"all": []}, channel="email", message={"subject": "s", "body": "b"}
        )
        session.add(campaign)
        session.flush()
        first, created = start(
            session, campaign, key="k", trigger="t", requested_by="m", now=utcnow()
        )
        again, created_again = start(
            session, campaign, key="k", trigger="t", requested_by="m", now=utcnow()
        )
        assert (created, created_again, first.id) == (True, False, again.id)


def test_messages_carry_the_persons_fields_and_their_favourite_product(app: Flask) -> None:
    feed(
        app,
        stage(
            "A",
            "lead",
            email="a@x.co",
            user="a",
            traits={"firstName": "Ada", "company": "Analytical"},
        ),
        consent("a", marketing=True),
        did("a", "Product Viewed", product_id="p1", name="Lamp", category="lights"),
        did("a", "Product Added", product_id="p2", name="Desk", category="tables"),
    )
    campaign = create(
        app.test_client(),
        {"all": []},
        message={
            "subject": "{{ first_name | default('Hi') }}, still want the {{ product }}?",
            "body": "{{ company }} · {{ category }} · {{ last_name | default('-') }}",
        },
    )
    trigger(app, campaign)
    work_runs(app)
    [event] = published(app, DISPATCH)
    assert event.payload["message"]["subject"] == "Ada, still want the Desk?"
    assert event.payload["message"]["body"] == "Analytical · tables · -"
    assert (event.payload["email"], event.payload["phone"]) == ("a@x.co", None)


def test_sms_goes_to_the_phone_and_never_carries_the_email(app: Flask) -> None:
    feed(
        app,
        stage("A", "lead", email="a@x.co", user="a", traits={"phone": "+886 912 345 678"}),
        stage("B", "lead", email="b@x.co", user="b"),
        consent("a", marketing=True),
        consent("b", marketing=True),
    )
    campaign = create(app.test_client(), {"all": []}, channel="sms")
    trigger(app, campaign)
    work_runs(app)
    [event] = published(app, DISPATCH)
    assert (event.payload["contact_id"], event.payload["email"]) == ("A", None)
    assert event.payload["phone"] == "+886 912 345 678"
    assert report(app, campaign)["skipped"] == {"no_address": 1}


def test_conversions_count_purchases_inside_the_attribution_window(app: Flask) -> None:
    seed(app)
    campaign = create(app.test_client(), {"members": False}, attribution_days=3)
    trigger(app, campaign)
    sent_at = utcnow() - timedelta(days=5)
    work_runs(app, now=sent_at)
    feed(
        app,
        did("u1", "Order Completed", revenue=80, at=sent_at + timedelta(hours=2)),
        did("u1", "Order Completed", revenue=20, at=sent_at + timedelta(days=1)),
        did("u1", "Order Completed", revenue=7, at=sent_at - timedelta(hours=1)),  # before
        did("u4", "Order Completed", revenue=999, at=sent_at + timedelta(days=4)),  # too late
        did("u2", "Order Completed", revenue=50, at=sent_at + timedelta(hours=1)),  # not reached
    )
    body = report(app, campaign)
    assert (body["dispatched_count"], body["conversions"], body["revenue"]) == (2, 1, "100.00")

"""The marketing API on campaigns: create, run (idempotent, worked by the scheduler in
chunks), follow a run, read the report; roles and bad input; SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from flask import Flask
from sqlalchemy import delete, func, select, update

from services.member_retargeting.models import Campaign, CampaignRun, outbox
from services.member_retargeting.web.schemas import MAX_KEY_LENGTH
from shared.db import utcnow
from shared.topics import DISPATCH
from tests.unit.member_retargeting.conftest import (
    MARKETING,
    create,
    published,
    seed,
    state_of,
    trigger,
    work_runs,
)


@pytest.mark.parametrize(
    ("segment", "expected"),
    [
        ({"members": True}, ["L2"]),
        ({"stages": ["mql"]}, ["L1"]),
        ({"stages": ["mql", "lead"], "min_score": 10}, ["L1"]),
        ({"members": False}, ["L1", "L4"]),
        ({"attribute": "stage", "op": "in", "value": ["mql", "lead"]}, ["L1", "L4"]),
    ],
)
def test_a_run_dispatches_one_event_per_recipient(
    app: Flask, segment: dict, expected: list[str]
) -> None:
    seed(app)
    client = app.test_client()
    campaign = create(client, segment)
    run = trigger(client, campaign)  # 202
    assert run["created"] is True and run["status"] == "pending"
    # The HTTP request only fixes the audience; the scheduler sends.
    assert published(app, DISPATCH) == []
    work_runs(app)
    events = published(app, DISPATCH)
    # L3 matches the mql segments but has no e-mail: skipped, not sent.
    assert sorted(e.payload["contact_id"] for e in events) == expected
    assert all(e.payload["email"] for e in events)
    detail = client.get(f"/campaigns/{campaign['id']}", headers=MARKETING).json
    assert (detail["dispatched_count"], detail["published_count"]) == (len(expected), 0)
    assert [r["status"] for r in detail["runs"]] == ["done"]
    assert detail["runs"][0]["progress"] == 1.0
    assert detail["audience_size"] == len(expected) + detail["skipped"].get("no_address", 0)


def test_the_same_idempotency_key_never_starts_a_second_run(app: Flask) -> None:
    seed(app)
    client = app.test_client()
    campaign = create(client, {"members": False})
    url = f"/campaigns/{campaign['id']}/runs"
    first = client.post(url, headers=MARKETING, json={"idempotency_key": "launch-1"})
    again = client.post(url, headers=MARKETING, json={"idempotency_key": "launch-1"})
    header = client.post(
        f"/campaigns/{campaign['id']}/trigger", headers={**MARKETING, "Idempotency-Key": "launch-1"}
    )
    assert first.status_code == again.status_code == header.status_code == 202
    assert first.json["created"] is True
    assert again.json["created"] is header.json["created"] is False
    assert first.json["run_id"] == again.json["run_id"] == header.json["run_id"]
    work_runs(app)
    retry = client.post(url, headers=MARKETING, json={"idempotency_key": "launch-1"})
    assert retry.json["created"] is False
    work_runs(app)
    assert len(published(app, DISPATCH)) == 2
    other = client.post(url, headers=MARKETING, json={"idempotency_key": "launch-2"})
    assert other.json["created"] is True and other.json["run_id"] != first.json["run_id"]


def test_run_progress_is_visible(app: Flask) -> None:
    seed(app)
    client = app.test_client()
    campaign = create(client, {"members": False})
    run = trigger(client, campaign)
    before = client.get(f"/runs/{run['run_id']}", headers=MARKETING).json
    assert (before["status"], before["processed"], before["progress"]) == ("pending", 0, 0.0)
    work_runs(app)
    after = client.get(f"/runs/{run['run_id']}", headers=MARKETING).json
    assert (after["status"], after["processed"], after["progress"]) == (
        "done",
        3,
        1.0,
    )  # L3 too: skipped is handled
    assert after["finished_at"] is not None
    assert client.get("/runs/999", headers=MARKETING).status_code == 404


def test_a_campaign_over_a_saved_segment_copies_its_rule(app: Flask) -> None:
    seed(app)
    client = app.test_client()
    saved = client.post(
        "/segments",
        headers=MARKETING,
        json={"name": "mqls", "rule": {"attribute": "stage", "op": "eq", "value": "mql"}},
    ).json
    body = {"name": "n", "segment_id": saved["id"], "message": {"subject": "s", "body": "b"}}
    response = client.post("/campaigns", headers=MARKETING, json=body)
    assert response.status_code == 201
    assert response.json["segment"] == saved["rule"]
    assert response.json["current_audience"] == 2  # L1 and L3
    missing = client.post("/campaigns", headers=MARKETING, json={**body, "segment_id": 999})
    assert missing.status_code == 404


GOOD = {"name": "n", "segment": {}, "message": {"subject": "s", "body": "b"}}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"segment": {}, "message": {"subject": "s", "body": "b"}}, "name"),
        ({**GOOD, "segment": {"stages": ["hot"]}}, "segment.all.0.value"),
        ({**GOOD, "segment": {"colour": 1}}, "segment"),
        (
            {**GOOD, "segment": {"all": [{"attribute": "tier", "op": "gt", "value": 1}]}},
            "segment.all.0.op",
        ),
        ({**GOOD, "message": {"subject": "s"}}, "message"),
        ({**GOOD, "channel": "pigeon"}, "channel"),
        ({**GOOD, "message": {"subject": "{{ first_name", "body": "b"}}, "message.subject"),
        ({**GOOD, "channel": "ads", "message": {}}, "message.platform"),
        ({**GOOD, "trigger": {"delay_hours": 4}}, "trigger.event"),
        (
            {**GOOD, "schedule_at": "2030-01-01T00:00:00Z", "trigger": {"event": "x"}},
            "trigger",
        ),
        ({**GOOD, "attribution_days": 0}, "attribution_days"),
        ({**GOOD, "segment_id": 1}, "segment"),
    ],
)
def test_bad_campaigns_get_422_naming_the_field(app: Flask, body: dict, field: str) -> None:
    response = app.test_client().post("/campaigns", headers=MARKETING, json=body)
    assert response.status_code == 422, response.json
    assert field in response.json["error"]["fields"], response.json


def test_roles_and_missing_campaigns(app: Flask) -> None:
    client = app.test_client()
    sales = {"Authorization": "Bearer sales-t"}
    assert client.get("/campaigns").status_code == 401
    assert client.get("/campaigns", headers=sales).status_code == 403
    assert client.post("/campaigns/1/trigger", headers=sales).status_code == 403
    assert client.get("/campaigns/99", headers=MARKETING).status_code == 404
    keyed = {**MARKETING, "Idempotency-Key": "k"}
    assert client.post("/campaigns/99/trigger", headers=keyed).status_code == 404
    keyed_body = {"idempotency_key": "k"}
    assert client.post("/campaigns/99/runs", headers=MARKETING, json=keyed_body).status_code == 404
    assert client.get("/campaigns/99/report", headers=MARKETING).status_code == 404
    bad_json = client.post(
        "/campaigns", headers=MARKETING, data="{", content_type="application/json"
    )
    assert bad_json.status_code == 400


def test_the_published_count_survives_pruning_of_sent_rows(app: Flask) -> None:
    seed(app)
    client = app.test_client()
    campaign = create(client, {"stages": ["mql", "lead", "customer"]})
    trigger(client, campaign)
    work_runs(app)

    def published_count() -> int:
        return client.get(f"/campaigns/{campaign['id']}", headers=MARKETING).json["published_count"]

    engine = state_of(app).engine
    with engine.begin() as conn:
        first = conn.scalar(
            select(outbox.c.id).where(outbox.c.topic == DISPATCH).order_by(outbox.c.id).limit(1)
        )
        conn.execute(update(outbox).where(outbox.c.id != first).values(sent_at=utcnow()))
    assert published_count() == 2  # of 3 dispatched, one still waits
    with engine.begin() as conn:  # housekeeping prunes sent rows past the horizon
        conn.execute(delete(outbox).where(outbox.c.sent_at.is_not(None)))
    assert published_count() == 2


def run_count(app: Flask) -> int:
    with state_of(app).sessions() as session:
        return int(session.scalar(select(func.count()).select_from(CampaignRun)) or 0)


# Regression (review finding 2): a trigger without a key got a fresh one made up on the
# server, so every retry of a lost answer started a second run.
@pytest.mark.parametrize(
    ("path", "kw", "field"),
    [
        ("runs", {"json": {}}, "idempotency_key"),
        ("runs", {"json": {"idempotency_key": ""}}, "idempotency_key"),
        ("runs", {"json": {"idempotency_key": "k" * (MAX_KEY_LENGTH + 1)}}, "idempotency_key"),
        ("runs", {"json": {"idempotency_key": "a\u0000b"}}, "idempotency_key"),
        ("runs", {"json": {"idempotency_key": "a\ud800b"}}, "idempotency_key"),
        ("trigger", {}, "Idempotency-Key"),
        ("trigger", {"headers": {"Idempotency-Key": ""}}, "Idempotency-Key"),
        (
            "trigger",
            {"headers": {"Idempotency-Key": "k" * (MAX_KEY_LENGTH + 1)}},
            "Idempotency-Key",
        ),
        ("trigger", {"headers": {"Idempotency-Key": "a\tb"}}, "Idempotency-Key"),
    ],
)
def test_starting_a_run_needs_an_idempotency_key(
    app: Flask, path: str, kw: dict, field: str
) -> None:
    seed(app)
    client = app.test_client()
    campaign = create(client, {"all": []}, kind="transactional")
    headers = {**MARKETING, **kw.pop("headers", {})}
    response = client.post(f"/campaigns/{campaign['id']}/{path}", headers=headers, **kw)
    assert response.status_code == 422, response.json
    assert set(response.json["error"]["fields"]) == {field}
    assert run_count(app) == 0


def test_a_retried_trigger_with_its_key_sends_once(app: Flask) -> None:
    seed(app)
    client = app.test_client()
    receipt = create(client, {"all": []}, kind="transactional")
    first = trigger(client, receipt, "checkout-42")
    retries = [trigger(client, receipt, "checkout-42") for _ in range(2)]
    body = client.post(
        f"/campaigns/{receipt['id']}/runs",
        headers=MARKETING,
        json={"idempotency_key": "checkout-42"},
    ).json
    assert {r["run_id"] for r in [*retries, body]} == {first["run_id"]}
    work_runs(app)
    sent = [e.payload["contact_id"] for e in published(app, DISPATCH)]
    assert sorted(sent) == sorted(set(sent)) == ["L1", "L2", "L4"]


def test_the_longest_key_fits(app: Flask) -> None:
    client = app.test_client()
    campaign = create(client, {"all": []})
    assert trigger(client, campaign, "k" * MAX_KEY_LENGTH)["created"] is True
    again = trigger(client, campaign, "k" * MAX_KEY_LENGTH)
    assert again["created"] is False


def test_an_api_key_never_meets_the_schedulers(app: Flask) -> None:
    """Keys from the API are kept as ``api:<key>``: a client sending the scheduler's key
    for a campaign's schedule neither takes over nor blocks the scheduled run."""
    seed(app)
    client = app.test_client()
    at = (utcnow() - timedelta(minutes=1)).replace(microsecond=0)
    campaign = create(client, {"members": False}, schedule_at=at.isoformat())
    with state_of(app).sessions() as session:
        stored = session.get(Campaign, campaign["id"])
        assert stored is not None and stored.schedule_at is not None
        scheduler_key = f"schedule:{stored.schedule_at.isoformat()}"
    manual = trigger(client, campaign, scheduler_key)
    assert manual["created"] is True
    work_runs(app)
    runs = client.get(f"/campaigns/{campaign['id']}", headers=MARKETING).json["runs"]
    assert [r["trigger"] for r in runs] == ["manual", "schedule"]
    with state_of(app).sessions() as session:
        keys = set(session.scalars(select(CampaignRun.idempotency_key)))
    assert keys == {f"api:{scheduler_key}", scheduler_key}


def test_a_campaign_shows_its_newest_50_runs(app: Flask) -> None:
    """Regression (review finding 12): every run a campaign ever had, in every answer."""
    client = app.test_client()
    campaign = create(client, {"all": []})
    ids = [trigger(client, campaign, f"run-{i}")["run_id"] for i in range(55)]
    detail = client.get(f"/campaigns/{campaign['id']}", headers=MARKETING).json
    assert [r["run_id"] for r in detail["runs"]] == ids[-50:]
    listed = client.get("/campaigns", headers=MARKETING).json["items"]
    assert [r["run_id"] for r in listed[0]["runs"]] == ids[-50:]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**GOOD, "name": "a\u0000b"}, "name"),
        ({**GOOD, "name": "a\ud800b"}, "name"),
        ({**GOOD, "message": {"subject": "s\u0000", "body": "b"}}, "message.subject"),
        ({**GOOD, "message": {"subject": "s", "body": "\ud800"}}, "message.body"),
        ({**GOOD, "trigger": {"event": "Product Added\u0000"}}, "trigger.event"),
        ({**GOOD, "segment": {"attribute": "score", "op": "gt", "value": 10**30}}, "segment"),
    ],
)
def test_hostile_campaign_fields_are_a_422(app: Flask, body: dict, field: str) -> None:
    """Regression (review finding 7): a NUL or lone surrogate reached PostgreSQL."""
    response = app.test_client().post("/campaigns", headers=MARKETING, json=body)
    assert response.status_code == 422, response.json
    assert any(f.startswith(field) for f in response.json["error"]["fields"]), response.json


def test_a_body_may_have_line_breaks(app: Flask) -> None:
    message = {"subject": "Hi", "body": "<p>Hi</p>\n<p>Come back</p>"}
    create(app.test_client(), {"all": []}, message=message)


def test_a_campaign_whose_stored_rule_no_longer_holds_never_breaks_the_list(app: Flask) -> None:
    with state_of(app).sessions.begin() as session:
        session.add(
            Campaign(
                name="old",
                segment={"attribute": "score", "op": "gt", "value": 10**30},
                channel="email",
                message={"subject": "s", "body": "b"},
            )
        )
    client = app.test_client()
    listed = client.get("/campaigns", headers=MARKETING)
    assert listed.status_code == 200 and listed.json["items"][0]["current_audience"] is None
    assert client.get("/campaigns/1", headers=MARKETING).json["current_audience"] is None

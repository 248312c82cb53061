"""The marketing API on campaigns: create, run (idempotent, worked by the scheduler in
chunks), follow a run, read the report; roles and bad input; SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from flask import Flask
from sqlalchemy import delete, select, update

from services.member_retargeting.models import outbox
from shared.db import utcnow
from shared.topics import DISPATCH
from tests.unit.member_retargeting.conftest import (
    MARKETING,
    create,
    published,
    seed,
    state_of,
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
    response = client.post(f"/campaigns/{campaign['id']}/trigger", headers=MARKETING)
    assert response.status_code == 202
    run = response.json
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
    run = client.post(f"/campaigns/{campaign['id']}/trigger", headers=MARKETING).json
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
    assert client.post("/campaigns/99/trigger", headers=MARKETING).status_code == 404
    assert client.get("/campaigns/99/report", headers=MARKETING).status_code == 404
    bad_json = client.post(
        "/campaigns", headers=MARKETING, data="{", content_type="application/json"
    )
    assert bad_json.status_code == 400


def test_the_published_count_survives_pruning_of_sent_rows(app: Flask) -> None:
    seed(app)
    client = app.test_client()
    campaign = create(client, {"stages": ["mql", "lead", "customer"]})
    client.post(f"/campaigns/{campaign['id']}/trigger", headers=MARKETING)
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

"""The marketing API: campaigns, triggers and their reports, roles and bad input; on
SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from flask import Flask
from sqlalchemy import delete, select, update

from services.member_retargeting.models import outbox
from services.member_retargeting.state import STATE as RETARGETING_STATE
from shared.db import utcnow
from shared.events import decode
from tests.unit.member_retargeting.conftest import (
    MARKETING,
    create,
    seed,
)


@pytest.mark.parametrize(
    ("segment", "expected"),
    [
        ({"members": True}, ["L2"]),
        ({"stages": ["mql"]}, ["L1"]),
        ({"stages": ["mql", "lead"], "min_score": 10}, ["L1"]),
        ({"members": False}, ["L1", "L4"]),
    ],
)
def test_trigger_dispatches_one_event_per_recipient(
    app: Flask, segment: dict, expected: list[str]
) -> None:
    seed(app)
    client = app.test_client()
    campaign = create(client, segment)
    assert campaign["audience_size"] == len(expected)
    response = client.post(f"/campaigns/{campaign['id']}/trigger", headers=MARKETING)
    assert response.status_code == 202
    assert response.json["audience_size"] == len(expected)
    with app.extensions[RETARGETING_STATE].engine.connect() as conn:
        rows = list(conn.execute(select(outbox).order_by(outbox.c.id)))
    events = [decode(r.value) for r in rows]
    assert sorted(e.payload["contact_id"] for e in events) == expected
    assert {r.topic for r in rows} == {"funnel.dispatch"}
    assert all(r.key == e.payload["contact_id"] for r, e in zip(rows, events, strict=True))
    detail = client.get(f"/campaigns/{campaign['id']}", headers=MARKETING).json
    assert (detail["dispatched_count"], detail["published_count"]) == (len(expected), 0)
    assert [r["audience_size"] for r in detail["runs"]] == [len(expected)]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"segment": {}, "message": {"subject": "s", "body": "b"}}, "name"),
        (
            {"name": "n", "segment": {"stages": ["hot"]}, "message": {"subject": "s", "body": "b"}},
            "segment.stages.0",
        ),
        (
            {"name": "n", "segment": {"colour": 1}, "message": {"subject": "s", "body": "b"}},
            "segment.colour",
        ),
        ({"name": "n", "segment": {}, "message": {"subject": "s"}}, "message.body"),
        (
            {
                "name": "n",
                "segment": {},
                "channel": "pigeon",
                "message": {"subject": "s", "body": "b"},
            },
            "channel",
        ),
    ],
)
def test_bad_campaigns_get_422_naming_the_field(app: Flask, body: dict, field: str) -> None:
    response = app.test_client().post("/campaigns", headers=MARKETING, json=body)
    assert response.status_code == 422
    assert field in response.json["error"]["fields"]


def test_roles_and_missing_campaigns(app: Flask) -> None:
    client = app.test_client()
    assert client.get("/campaigns").status_code == 401
    assert client.get("/campaigns", headers={"Authorization": "Bearer sales-t"}).status_code == 403
    assert (
        client.post("/campaigns/1/trigger", headers={"Authorization": "Bearer sales-t"}).status_code
        == 403
    )
    assert client.get("/campaigns/99", headers=MARKETING).status_code == 404
    assert client.post("/campaigns/99/trigger", headers=MARKETING).status_code == 404
    assert (
        client.post(
            "/campaigns", headers=MARKETING, data="{", content_type="application/json"
        ).status_code
        == 400
    )


def test_the_published_count_survives_pruning_of_sent_rows(app: Flask) -> None:
    seed(app)
    client = app.test_client()
    campaign = create(client, {"stages": ["mql", "lead", "customer"]})
    client.post(f"/campaigns/{campaign['id']}/trigger", headers=MARKETING)

    def published() -> int:
        return client.get(f"/campaigns/{campaign['id']}", headers=MARKETING).json["published_count"]

    engine = app.extensions[RETARGETING_STATE].engine
    with engine.begin() as conn:
        first = conn.scalar(select(outbox.c.id).order_by(outbox.c.id).limit(1))
        conn.execute(update(outbox).where(outbox.c.id != first).values(sent_at=utcnow()))
    assert published() == 2
    with engine.begin() as conn:  # housekeeping prunes sent rows past the horizon
        conn.execute(delete(outbox).where(outbox.c.sent_at.is_not(None)))
    assert published() == 2

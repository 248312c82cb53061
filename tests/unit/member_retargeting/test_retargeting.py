"""member-retargeting: contacts and members from lead events, orders from traffic,
campaigns and triggers through the marketing API. Real SQLite and PostgreSQL."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import delete, select, update

from services.member_retargeting.app import create_app, init_db
from services.member_retargeting.config import RetargetingConfig
from services.member_retargeting.consumer import handlers
from services.member_retargeting.models import Contact, Order, outbox, processed_events
from services.member_retargeting.state import STATE as RETARGETING_STATE
from shared.config import Tokens
from shared.db import utcnow
from shared.events import decode, encode, new_event
from shared.runner import BatchProcessor
from shared.topics import LEADS, TRAFFIC
from tests.helpers import FakeRecord

MARKETING = {"Authorization": "Bearer marketing-t"}


@pytest.fixture
def app(database_url: str) -> Flask:
    app = create_app(
        RetargetingConfig(
            database_url=database_url, tokens=Tokens("sales-t", "marketing-t", "admin-t")
        )
    )
    init_db(app.extensions[RETARGETING_STATE].engine)
    return app


def feed(app: Flask, *items: tuple[str, Any], dead_letters: int = 0) -> None:
    state = app.extensions[RETARGETING_STATE]
    processor = BatchProcessor(
        consumer_name="member-retargeting",
        sessions=state.sessions,
        handlers=handlers(),
        processed_table=processed_events,
        outbox_table=outbox,
    )
    result = processor.process(
        [FakeRecord(topic, 0, i, b"k", encode(e)) for i, (topic, e) in enumerate(items)]
    )
    assert len(result.dead_letters) == dead_letters, result.dead_letters


def snapshot(
    lead_id: str,
    stage: str,
    email: str | None = None,
    score: int = 0,
    anon: tuple[str, ...] = (),
    user: str | None = None,
    version: int | None = None,
) -> dict:
    return {
        "version": version,
        "lead_id": lead_id,
        "stage": stage,
        "score": score,
        "email": email,
        "user_id": user,
        "anonymous_ids": list(anon),
        "traits": {},
    }


def stage(lead_id: str, to: str, **kw: Any):
    return LEADS, new_event(
        "lead.stage_changed",
        {
            "lead": snapshot(lead_id, to, **kw),
            "from_stage": None,
            "to_stage": to,
            "reason": "test",
            "changed_by": "system",
        },
        source="lead-scoring",
    )


def order(user: str, revenue: Any):
    return TRAFFIC, new_event(
        "track",
        {"event": "Order Completed", "properties": {"revenue": revenue, "currency": "usd"}},
        source="web",
        user_id=user,
    )


def seed(app: Flask) -> None:
    feed(
        app,
        stage("L1", "mql", email="mql@x.co", score=60),
        stage("L2", "customer", email="buyer@x.co", user="u2"),
        stage("L3", "mql", score=70),  # no email: not reachable by email
        stage("L4", "lead", email="lead@x.co"),
        order("u2", "120.50"),
        order("u2", 30),
        order("u9", 5),
        (TRAFFIC, new_event("page", {"properties": {}}, source="web", anonymous_id="z")),
    )


def create(client, segment: dict, name: str = "c") -> dict:
    response = client.post(
        "/campaigns",
        headers=MARKETING,
        json={
            "name": name,
            "segment": segment,
            "channel": "email",
            "message": {"subject": "Hi", "body": "Come back"},
        },
    )
    assert response.status_code == 201, response.json
    return response.json


def test_customers_become_members_with_their_orders(app: Flask) -> None:
    seed(app)
    body = app.test_client().get("/members", headers=MARKETING).json
    assert body["total"] == 1
    [member] = body["items"]
    assert (member["lead_id"], member["orders"], member["revenue"]) == ("L2", 2, "150.50")


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


def test_merged_contacts_are_not_targeted_twice(app: Flask) -> None:
    feed(app, stage("L1", "mql", email="a@x.co"), stage("L2", "mql", email="a@x.co"))
    feed(
        app,
        (
            LEADS,
            new_event(
                "lead.merged",
                {
                    "lead": snapshot("L1", "mql", email="a@x.co"),
                    "merged_lead_id": "L2",
                    "reason": "same person",
                },
                source="lead-scoring",
            ),
        ),
    )
    assert create(app.test_client(), {"stages": ["mql"]})["audience_size"] == 1


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


def test_an_older_snapshot_never_overwrites_a_newer_one(app: Flask) -> None:
    """Lead events of one lead can arrive out of order (an API action and the consumer
    publish through the same outbox): the contact keeps the newest picture."""
    feed(
        app,
        stage("L1", "sql", email="new@x.co", version=7),
        stage("L1", "mql", email="old@x.co", version=6),
    )
    feed(app, stage("L1", "lead", email="unversioned@x.co"))  # an older producer: applied
    feed(app, stage("L1", "customer", email="newest@x.co", version=8))
    with app.extensions[RETARGETING_STATE].sessions() as session:
        contact = session.get(Contact, "L1")
        assert contact is not None
        assert (contact.stage, contact.email, contact.lead_version) == (
            "customer",
            "newest@x.co",
            8,
        )


def test_an_order_amount_beyond_the_column_is_a_dead_letter_not_a_stop(app: Flask) -> None:
    feed(app, order("u1", 10**13), order("u1", "1e999999"), order("u1", "12.5"), dead_letters=2)
    with app.extensions[RETARGETING_STATE].sessions() as session:
        assert [o.revenue for o in session.scalars(select(Order))] == [Decimal("12.50")]


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

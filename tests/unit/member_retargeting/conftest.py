"""Fixtures and builders for member-retargeting tests: an app on both databases, lead
and traffic events fed through the real runner batch."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from services.member_retargeting.app import create_app, init_db
from services.member_retargeting.config import RetargetingConfig
from services.member_retargeting.consumer import handlers
from services.member_retargeting.models import outbox, processed_events
from services.member_retargeting.state import STATE as RETARGETING_STATE
from shared.config import Tokens
from shared.events import encode, new_event
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

"""Fixtures and builders for member-retargeting tests: an app on both databases, lead
and traffic events fed through the real runner batch, campaign runs worked by the real
scheduler pass."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from services.member_retargeting.app import create_app, init_db
from services.member_retargeting.config import RetargetingConfig
from services.member_retargeting.consumer import handlers
from services.member_retargeting.jobs.scheduler import Scheduler
from services.member_retargeting.models import outbox, processed_events
from services.member_retargeting.state import STATE as RETARGETING_STATE
from services.member_retargeting.state import RetargetingState
from shared.config import Tokens
from shared.db import utcnow
from shared.events import Envelope, decode, encode, new_event
from shared.runner import BatchProcessor
from shared.topics import LEADS, TRAFFIC
from tests.helpers import FakeRecord

MARKETING = {"Authorization": "Bearer marketing-t"}
TOKENS = Tokens("sales-t", "marketing-t", "admin-t")


@pytest.fixture
def app(database_url: str) -> Flask:
    app = create_app(RetargetingConfig(database_url=database_url, tokens=TOKENS, run_chunk=50))
    init_db(app.extensions[RETARGETING_STATE].engine)
    return app


def state_of(app: Flask) -> RetargetingState:
    state = app.extensions[RETARGETING_STATE]
    assert isinstance(state, RetargetingState)
    return state


def feed(app: Flask, *items: tuple[str, Any], dead_letters: int = 0) -> None:
    state = state_of(app)
    processor = BatchProcessor(
        consumer_name="member-retargeting",
        sessions=state.sessions,
        handlers=handlers(state.config),
        processed_table=processed_events,
        outbox_table=outbox,
    )
    result = processor.process(
        [FakeRecord(topic, 0, i, b"k", encode(e)) for i, (topic, e) in enumerate(items)]
    )
    assert len(result.dead_letters) == dead_letters, result.dead_letters


def work_runs(app: Flask, now: datetime | None = None, passes: int = 100) -> int:
    """Scheduler passes until nothing is left to do (bounded); returns recipients handled."""
    state = state_of(app)
    scheduler = Scheduler(state.sessions, state.config, clock=lambda: now or utcnow())
    total = 0
    for _ in range(passes):
        handled = scheduler.run_once()
        total += handled
        if not handled:
            return total
    raise AssertionError(f"runs not done after {passes} passes")


def published(app: Flask, topic: str | None = None) -> list[Envelope]:
    """The events waiting in the outbox (in order), optionally of one topic."""
    with state_of(app).engine.connect() as conn:
        rows = list(conn.execute(select(outbox).order_by(outbox.c.id)))
    return [decode(r.value) for r in rows if topic is None or r.topic == topic]


def snapshot(
    lead_id: str,
    stage: str,
    email: str | None = None,
    score: int = 0,
    anon: tuple[str, ...] = (),
    user: str | None = None,
    version: int | None = None,
    traits: dict[str, Any] | None = None,
    intent: dict[str, int] | None = None,
) -> dict:
    return {
        "version": version,
        "lead_id": lead_id,
        "stage": stage,
        "score": score,
        "email": email,
        "user_id": user,
        "anonymous_ids": list(anon),
        "traits": traits or {},
        "intent": intent or {},
    }


def stage(lead_id: str, to: str, **kw: Any) -> tuple[str, Envelope]:
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


def order(
    user: str, revenue: Any, *, at: datetime | None = None, products: list | None = None
) -> tuple[str, Envelope]:
    properties: dict[str, Any] = {"revenue": revenue, "currency": "usd"}
    if products is not None:
        properties["products"] = products
    return TRAFFIC, new_event(
        "track",
        {"event": "Order Completed", "properties": properties},
        source="web",
        user_id=user,
        occurred_at=at,
    )


def did(
    user: str, event: str, *, at: datetime | None = None, **properties: Any
) -> tuple[str, Envelope]:
    """A track call by ``user`` (e.g. ``Product Added`` with product_id and category)."""
    return TRAFFIC, new_event(
        "track",
        {"event": event, "properties": properties},
        source="web",
        user_id=user,
        occurred_at=at,
    )


def consent(
    who: str, *, anonymous: bool = False, at: datetime | None = None, **categories: bool
) -> tuple[str, Envelope]:
    """A page call carrying ``context.consent.categoryPreferences`` (Segment's format)."""
    ids = {"anonymous_id": who} if anonymous else {"user_id": who}
    return TRAFFIC, new_event(
        "page",
        {"properties": {}},
        source="web",
        context={"consent": {"categoryPreferences": categories}},
        occurred_at=at,
        **ids,
    )


def seed(app: Flask) -> None:
    """Four contacts (L1-L4) with marketing consent, one customer with two orders."""
    feed(
        app,
        stage("L1", "mql", email="mql@x.co", score=60, user="u1"),
        stage("L2", "customer", email="buyer@x.co", user="u2"),
        stage("L3", "mql", score=70, user="u3"),  # no email: not reachable by email
        stage("L4", "lead", email="lead@x.co", user="u4"),
        order("u2", "120.50"),
        order("u2", 30),
        order("u9", 5),
        (TRAFFIC, new_event("page", {"properties": {}}, source="web", anonymous_id="z")),
        *(consent(f"u{i}", marketing=True) for i in range(1, 5)),
    )


def trigger(client: Any, campaign: dict, key: str | None = None) -> dict:
    """Run the campaign now through the API, with ``key`` (default: a fresh one) as its
    ``Idempotency-Key``; returns the answer (202)."""
    headers = {**MARKETING, "Idempotency-Key": key or uuid.uuid4().hex}
    response = client.post(f"/campaigns/{campaign['id']}/trigger", headers=headers)
    assert response.status_code == 202, response.json
    return response.json


def create(client: Any, segment: dict, name: str = "c", **fields: Any) -> dict:
    body = {
        "name": name,
        "segment": segment,
        "channel": "email",
        "message": {"subject": "Hi", "body": "Come back"},
        **fields,
    }
    response = client.post("/campaigns", headers=MARKETING, json=body)
    assert response.status_code == 201, response.json
    return response.json

"""Campaigns that start by themselves, as the scheduler process runs them: once at their
scheduled time, or on an event after a delay (cart abandonment); SQLite and PostgreSQL."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from services.member_retargeting.app import create_app, init_db
from services.member_retargeting.campaigns import triggers
from services.member_retargeting.config import RetargetingConfig
from services.member_retargeting.jobs.scheduler import Scheduler
from services.member_retargeting.models import CampaignRun
from services.member_retargeting.state import STATE
from shared.db import utcnow
from shared.topics import DISPATCH
from tests.unit.member_retargeting.conftest import (
    MARKETING,
    TOKENS,
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


def runs(app: Flask, campaign: dict) -> list[dict]:
    return app.test_client().get(f"/campaigns/{campaign['id']}", headers=MARKETING).json["runs"]


def test_a_scheduled_campaign_runs_once_when_its_time_comes(app: Flask) -> None:
    seed(app)
    at = utcnow() + timedelta(hours=1)
    campaign = create(app.test_client(), {"members": False}, schedule_at=at.isoformat())
    work_runs(app, now=at - timedelta(minutes=1))
    assert runs(app, campaign) == [] and published(app, DISPATCH) == []
    work_runs(app, now=at + timedelta(seconds=1))
    work_runs(app, now=at + timedelta(hours=3))  # later passes, a restarted scheduler: no rerun
    [run] = runs(app, campaign)
    assert (run["trigger"], run["status"]) == ("schedule", "done")
    assert sorted(e.payload["contact_id"] for e in published(app, DISPATCH)) == ["L1", "L4"]


def test_cart_abandoners_get_one_reminder_after_the_delay(app: Flask) -> None:
    now = utcnow()
    people = {"a": "A", "b": "B", "c": "C", "d": "D", "e": "E"}
    feed(
        app,
        *(stage(lead, "lead", email=f"{user}@x.co", user=user) for user, lead in people.items()),
        *(consent(user, marketing=True) for user in people),
        did("a", "Product Added", product_id="p1", at=now - timedelta(hours=5)),
        did("b", "Product Added", product_id="p1", at=now - timedelta(hours=5)),
        did("b", "Order Completed", revenue=10, at=now - timedelta(hours=1)),  # bought
        did("c", "Product Added", product_id="p1", at=now - timedelta(hours=1)),  # too soon
        did("d", "Product Added", product_id="p1", at=now - timedelta(days=5)),  # long ago
        did("e", "Product Viewed", product_id="p1", at=now - timedelta(hours=5)),  # not added
    )
    campaign = create(
        app.test_client(),
        {"all": []},
        trigger={"event": "Product Added", "delay_hours": 4, "unless": "Order Completed"},
        message={"subject": "Your cart", "body": "{{ product }} is waiting"},
    )

    def reached() -> list[str]:
        return [
            e.payload["contact_id"]
            for e in published(app, DISPATCH)
            if e.payload["campaign_id"] == campaign["id"]
        ]

    work_runs(app, now=now)
    assert reached() == ["A"]
    work_runs(app, now=now + timedelta(minutes=20))  # the next slot: A is not reached again
    assert reached() == ["A"]
    work_runs(app, now=now + timedelta(hours=3, minutes=30))  # C's delay has passed
    assert reached() == ["A", "C"]
    assert {r["trigger"] for r in runs(app, campaign)} == {"event:Product Added"}
    [first] = [e for e in published(app, DISPATCH) if e.payload["contact_id"] == "A"]
    assert first.payload["message"]["body"] == "p1 is waiting"


def test_an_event_trigger_still_honours_the_segment_and_consent(app: Flask) -> None:
    now = utcnow()
    feed(
        app,
        stage("A", "lead", email="a@x.co", user="a"),
        stage("M", "customer", email="m@x.co", user="m"),
        stage("N", "lead", email="n@x.co", user="n"),
        consent("a", marketing=True),
        consent("m", marketing=True),
        *(did(u, "Product Added", at=now - timedelta(hours=2)) for u in "amn"),
    )
    campaign = create(
        app.test_client(),
        {"attribute": "is_member", "op": "eq", "value": False},
        trigger={"event": "Product Added", "delay_hours": 1},
    )
    work_runs(app, now=now)
    # M is a member (outside the segment); N never consented: skipped with the reason.
    assert [e.payload["contact_id"] for e in published(app, DISPATCH)] == ["A"]
    report = app.test_client().get(f"/campaigns/{campaign['id']}/report", headers=MARKETING)
    assert report.json["skipped"] == {"no_consent": 1}


def sent_to(app: Flask) -> Counter[str]:
    return Counter(
        e.payload["contact_id"] for e in published(app, DISPATCH) if e.type == "campaign.dispatch"
    )


def run_count(app: Flask) -> int:
    with state_of(app).sessions() as session:
        return int(session.scalar(select(func.count()).select_from(CampaignRun)) or 0)


CART = {"event": "Product Added", "delay_hours": 4, "unless": "Order Completed"}


def test_overlapping_event_slots_never_reach_a_person_twice(database_url: str) -> None:
    """Regression (review finding 1): a slot's run not done yet when the next slot came
    (one recipient per chunk here) left its people without a dispatch, so the next slot's
    run took them again and both sent."""
    app = create_app(
        RetargetingConfig(
            database_url=database_url, tokens=TOKENS, run_chunk=1, cap_per_day=5, cap_per_week=10
        )
    )
    init_db(app.extensions[STATE].engine)
    now = utcnow()
    feed(
        app,
        *(stage(lead, "lead", email=f"{lead}@x.co", user=lead.lower()) for lead in "AB"),
        *(consent(user, marketing=True) for user in "ab"),
        *(did(user, "Product Added", product_id="p", at=now - timedelta(hours=5)) for user in "ab"),
    )
    create(app.test_client(), {"all": []}, trigger=CART)
    clock = [now]
    scheduler = Scheduler(state_of(app).sessions, state_of(app).config, clock=lambda: clock[0])
    scheduler.run_once()  # slot N: a run for A and B; its first chunk sends to A
    assert sent_to(app) == {"A": 1}
    clock[0] = now + timedelta(minutes=16)  # slot N+1 while B is still waiting in run 1
    for _ in range(10):
        scheduler.run_once()
    assert sent_to(app) == {"A": 1, "B": 1}
    assert run_count(app) == 1  # slot N+1 had nobody new: no run of its own


def test_an_event_slot_with_nobody_to_reach_starts_no_run(app: Flask) -> None:
    """Regression (review finding 1): every 15-minute slot started a run, empty or not."""
    now = utcnow()
    feed(app, stage("A", "lead", email="a@x.co", user="a"), consent("a", marketing=True))
    create(app.test_client(), {"all": []}, trigger=CART)
    clock = [now]
    scheduler = Scheduler(state_of(app).sessions, state_of(app).config, clock=lambda: clock[0])
    for minutes in (0, 1, 16, 31, 46):
        clock[0] = now + timedelta(minutes=minutes)
        scheduler.run_once()
    assert run_count(app) == 0
    feed(app, did("a", "Product Added", product_id="p", at=now - timedelta(hours=4)))
    clock[0] = now + timedelta(minutes=61)  # a new slot: someone to reach
    scheduler.run_once()
    assert run_count(app) == 1 and sent_to(app) == {"A": 1}


def test_an_empty_slot_is_not_looked_at_again_until_the_next(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    create(app.test_client(), {"all": []}, trigger=CART)
    calls: list[Any] = []
    real_start = triggers.start
    monkeypatch.setattr(
        triggers, "start", lambda *a, **kw: calls.append(kw["key"]) or real_start(*a, **kw)
    )
    slot_start = utcnow().replace(minute=0, second=0, microsecond=0)
    clock = [slot_start]
    scheduler = Scheduler(state_of(app).sessions, state_of(app).config, clock=lambda: clock[0])
    for seconds in (0, 1, 2, 60):
        clock[0] = slot_start + timedelta(seconds=seconds)
        scheduler.run_once()
    clock[0] = slot_start + timedelta(minutes=15)
    scheduler.run_once()
    assert len(calls) == 2 and calls[0] != calls[1]  # once per slot


def test_an_order_before_the_cart_does_not_save_it(app: Flask) -> None:
    """Regression (review finding 8): ``unless`` was any order in the whole lookback, so
    a person who bought yesterday and abandoned a new cart today was never reminded."""
    now = utcnow()
    feed(
        app,
        *(stage(lead, "lead", email=f"{lead}@x.co", user=lead.lower()) for lead in "ABC"),
        *(consent(user, marketing=True) for user in "abc"),
        # A bought, then filled a new cart and left it: reminded.
        did("a", "Order Completed", revenue=10, at=now - timedelta(hours=20)),
        did("a", "Product Added", product_id="p2", at=now - timedelta(hours=5)),
        # B left a cart, then bought: not reminded.
        did("b", "Product Added", product_id="p1", at=now - timedelta(hours=30)),
        did("b", "Order Completed", revenue=10, at=now - timedelta(hours=6)),
        # C bought at the very moment of adding: "at or after" it counts.
        did("c", "Product Added", product_id="p3", at=now - timedelta(hours=5)),
        did("c", "Order Completed", revenue=10, at=now - timedelta(hours=5)),
    )
    create(app.test_client(), {"all": []}, trigger=CART)
    work_runs(app, now=now)
    assert sent_to(app) == {"A": 1}


def test_a_schedule_whose_run_exists_is_not_looked_at_again(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (review finding 12): every pass started (and looked up) every campaign
    ever scheduled."""
    seed(app)
    at = utcnow() - timedelta(minutes=5)
    create(app.test_client(), {"members": False}, schedule_at=at.isoformat())
    calls: list[Any] = []
    real_start = triggers.start
    monkeypatch.setattr(
        triggers, "start", lambda *a, **kw: calls.append(kw["key"]) or real_start(*a, **kw)
    )
    for _ in range(3):
        with state_of(app).sessions.begin() as session:
            triggers.due_schedules(session, utcnow())
    assert len(calls) == 1 and run_count(app) == 1

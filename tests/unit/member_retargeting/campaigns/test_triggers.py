"""Campaigns that start by themselves, as the scheduler process runs them: once at their
scheduled time, or on an event after a delay (cart abandonment); SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from flask import Flask

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

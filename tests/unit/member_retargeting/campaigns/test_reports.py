"""Campaign reports: conversions are the orders inside the attribution window of one of a
person's dispatches, each order counted once; SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta

from flask import Flask

from services.member_retargeting.jobs.scheduler import Scheduler
from shared.db import utcnow
from tests.unit.member_retargeting.conftest import (
    MARKETING,
    consent,
    create,
    feed,
    order,
    stage,
    state_of,
    trigger,
)


def report(app: Flask, campaign: dict) -> dict:
    return app.test_client().get(f"/campaigns/{campaign['id']}/report", headers=MARKETING).json


def sent_at(app: Flask, campaign: dict, *times: datetime) -> None:
    """A run of the campaign sent at each of ``times`` (one scheduler pass each)."""
    state = state_of(app)
    for when in times:
        trigger(app.test_client(), campaign)
        Scheduler(state.sessions, state.config, clock=lambda w=when: w).run_once()


def test_an_order_between_two_windows_counts_for_neither(app: Flask) -> None:
    """Regression (review finding 9): the window ran from the first dispatch to the last
    window's end, so an order a month after a week's window counted."""
    feed(app, stage("A", "lead", email="a@x.co", user="a"), consent("a", marketing=True))
    campaign = create(app.test_client(), {"all": []}, kind="transactional", attribution_days=7)
    now = utcnow()
    sent_at(app, campaign, now - timedelta(days=60), now - timedelta(days=1))
    feed(app, order("a", 500, at=now - timedelta(days=30)))
    body = report(app, campaign)
    assert body["dispatched_count"] == 2
    assert (body["conversions"], body["revenue"]) == (0, "0.00")


def test_an_order_inside_two_windows_counts_once(app: Flask) -> None:
    feed(
        app,
        stage("A", "lead", email="a@x.co", user="a"),
        stage("B", "lead", email="b@x.co", user="b"),
        consent("a", marketing=True),
        consent("b", marketing=True),
    )
    campaign = create(app.test_client(), {"all": []}, kind="transactional", attribution_days=7)
    now = utcnow()
    sent_at(app, campaign, now - timedelta(days=5), now - timedelta(days=3))
    feed(
        app,
        order("a", "100.00", at=now - timedelta(days=2)),  # inside both windows
        order("a", "20.00", at=now - timedelta(days=4)),  # inside the first only
        order("b", "7.50", at=now - timedelta(days=1)),
        order("b", "1000.00", at=now - timedelta(days=6)),  # before any dispatch
    )
    body = report(app, campaign)
    assert body["dispatched_count"] == 4
    assert (body["conversions"], body["revenue"]) == (2, "127.50")

"""The scheduler pass: one broken campaign or run never holds up the others, the daily
work runs once a day, and a missing database stops the process for its supervisor."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import func, select, update

from services.member_retargeting.config import RetargetingConfig
from services.member_retargeting.jobs.scheduler import MAX_RUN_FAILURES, Scheduler
from services.member_retargeting.models import (
    Behaviour,
    Campaign,
    CampaignRun,
    Contact,
    Journey,
    JourneyIdentity,
)
from services.member_retargeting.processing import journeys
from shared.db import make_engine, make_sessionmaker, utcnow
from shared.runner import InfrastructureError
from shared.topics import DISPATCH
from tests.unit.member_retargeting.conftest import (
    MARKETING,
    create,
    did,
    feed,
    order,
    published,
    seed,
    stage,
    state_of,
    trigger,
)


def scheduler(app: Flask, clock: list) -> Scheduler:
    state = state_of(app)
    return Scheduler(state.sessions, state.config, clock=lambda: clock[0])


def test_a_run_that_keeps_failing_is_marked_failed_and_the_others_go_on(app: Flask) -> None:
    seed(app)
    client = app.test_client()
    broken, good = create(client, {"all": []}, name="broken"), create(client, {"all": []})
    for campaign in (broken, good):
        trigger(client, campaign)
    with state_of(app).sessions.begin() as session:  # e.g. a channel this version dropped
        session.execute(update(Campaign).where(Campaign.id == broken["id"]).values(channel="fax"))
    clock = [utcnow()]
    passes = scheduler(app, clock)
    for _ in range(MAX_RUN_FAILURES):
        passes.run_once()
    runs = {
        r["trigger"]: r
        for r in client.get(f"/campaigns/{broken['id']}", headers=MARKETING).json["runs"]
    }
    assert runs["manual"]["status"] == "failed"
    assert "KeyError" in runs["manual"]["error"]
    assert {e.payload["campaign_id"] for e in published(app, DISPATCH)} == {good["id"]}
    assert passes.run_once() == 0  # a failed run is left alone


def test_a_campaign_whose_stored_rule_no_longer_compiles_does_not_stop_the_others(
    app: Flask,
) -> None:
    seed(app)
    client = app.test_client()
    at = utcnow() - timedelta(minutes=1)
    broken = create(client, {"all": []}, name="broken", schedule_at=at.isoformat())
    good = create(client, {"members": False}, schedule_at=at.isoformat())
    with state_of(app).sessions.begin() as session:
        session.execute(
            update(Campaign)
            .where(Campaign.id == broken["id"])
            .values(segment={"attribute": "retired", "op": "eq", "value": 1})
        )
    scheduler(app, [utcnow()]).run_once()
    assert client.get(f"/campaigns/{broken['id']}", headers=MARKETING).json["runs"] == []
    assert [
        r["status"] for r in client.get(f"/campaigns/{good['id']}", headers=MARKETING).json["runs"]
    ] == ["done"]


def test_the_daily_work_runs_once_a_day(app: Flask) -> None:
    now = utcnow()
    keep_days = state_of(app).config.behaviour_days
    feed(
        app,
        stage("A", "lead", user="a"),
        order("a", 10),
        did("a", "Product Viewed", product_id="old", at=now - timedelta(days=keep_days + 1)),
        did("a", "Product Viewed", product_id="new", at=now - timedelta(days=1)),
    )
    clock = [now]
    passes = scheduler(app, clock)
    passes.run_once()
    with state_of(app).sessions() as session:
        assert list(
            session.scalars(select(Behaviour.product_id).where(Behaviour.product_id.is_not(None)))
        ) == ["new"]
        assert session.get(Contact, "A").rfm_group is not None  # type: ignore[union-attr]
    feed(app, stage("B", "lead", user="b"), order("b", 99))
    clock[0] = now + timedelta(hours=2)
    passes.run_once()
    with state_of(app).sessions() as session:
        assert session.get(Contact, "B").rfm_group is None  # type: ignore[union-attr]
    clock[0] = now + timedelta(days=1, minutes=1)
    passes.run_once()
    with state_of(app).sessions() as session:
        assert session.get(Contact, "B").rfm_group is not None  # type: ignore[union-attr]
        assert session.scalar(select(func.count()).select_from(CampaignRun)) == 0


def test_the_daily_work_prunes_journeys_past_retention_a_chunk_at_a_time(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = utcnow()
    old = now - timedelta(days=state_of(app).config.behaviour_days + 1)
    feed(
        app,
        *(did(f"visitor-{i}", "Page Viewed", at=old) for i in range(5)),
        did("fresh", "Page Viewed", at=now - timedelta(days=1)),
        stage("L", "lead", user="old-lead"),
        did("old-lead", "Page Viewed", at=old),
    )
    monkeypatch.setattr(journeys, "PRUNE_CHUNK", 2)  # three chunks, the last one short
    scheduler(app, [now]).run_once()
    with state_of(app).sessions() as session:
        left = session.execute(select(Journey.lead_id, Journey.first_seen_at)).all()
        assert sorted(left, key=str) == [("L", old), (None, now - timedelta(days=1))]
        assert sorted(session.scalars(select(JourneyIdentity.value))) == ["fresh", "old-lead"]


def test_without_its_database_the_scheduler_stops_for_its_supervisor(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'missing' / 'nowhere.db'}"
    config = RetargetingConfig(database_url=url, schedule_poll_seconds=0.01)
    passes = Scheduler(make_sessionmaker(make_engine(url)), config)
    with pytest.raises(InfrastructureError):
        passes.run(max_seconds=10)


def test_a_stop_request_ends_the_loop(app: Flask) -> None:
    passes = scheduler(app, [utcnow()])
    passes.request_stop()
    passes.run(max_seconds=10)  # returns at once: nothing to assert but that it returned
    assert passes.failures == 0

"""SLA escalation: overdue MQLs listed and escalated once; one that fails alone is reported."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from sqlalchemy import select

from services.lead_scoring.jobs.sla import escalate_overdue
from services.lead_scoring.models import Lead, outbox
from services.lead_scoring.state import STATE as SCORING_STATE
from tests.unit.lead_scoring.conftest import (
    SALES,
    Feeder,
    make_mql,
)


def test_overdue_mqls_are_listed_and_escalated_once(scoring_app: Flask, feed: Feeder) -> None:
    client = scoring_app.test_client()
    late, on_time = make_mql(feed, "u1"), make_mql(feed, "u2")
    sessions = scoring_app.extensions[SCORING_STATE].sessions
    with sessions.begin() as s:
        s.get(Lead, late).mql_at = datetime.now(UTC) - timedelta(hours=30)  # type: ignore[union-attr]
    overdue = client.get("/leads/overdue", headers=SALES).json
    assert [x["id"] for x in overdue["items"]] == [late]
    assert 5.5 < overdue["items"][0]["overdue_hours"] < 6.5
    with sessions.begin() as s:
        first = escalate_overdue(s, datetime.now(UTC), 24.0)
    with sessions.begin() as s:
        second = escalate_overdue(s, datetime.now(UTC), 24.0)
    assert [o.envelope.payload["lead"]["lead_id"] for o in first] == [late]
    assert first[0].envelope.type == "lead.sla_breached" and second == []
    client.post(f"/leads/{late}/accept", headers=SALES, json={})
    assert client.get("/leads/overdue", headers=SALES).json["items"] == []
    assert on_time != late


def test_an_escalation_that_fails_alone_is_reported_and_the_rest_go_out(
    scoring_app: Flask, feed: Feeder, monkeypatch: pytest.MonkeyPatch
) -> None:
    for user in ("ok", "bad"):
        make_mql(feed, user)
    from services.lead_scoring.jobs import sla

    real = sla.snapshot

    def poisoned(store, lead, identities=None):  # type: ignore[no-untyped-def]
        if lead.user_id == "bad":
            raise KeyError("broken snapshot")
        return real(store, lead, identities)

    monkeypatch.setattr(sla, "snapshot", poisoned)
    later = datetime.now(UTC) + timedelta(hours=30)
    with scoring_app.extensions[SCORING_STATE].sessions.begin() as s:
        events = escalate_overdue(s, later, 24.0)
        assert [e.envelope.payload["lead"]["user_id"] for e in events] == ["ok"]
        letters = [r for r in s.execute(select(outbox)) if r.topic == "funnel.deadletter"]
        assert [r.headers["dlq.source"] for r in letters] == ["timer:sla"]
        # Both are marked: the bad one is not retried every 30 s forever.
        assert escalate_overdue(s, later, 24.0) == []

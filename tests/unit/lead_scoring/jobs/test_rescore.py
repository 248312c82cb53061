"""The rescore job: every lead rescored from history with progress; a lead that fails alone
is reported and the job finishes."""

from __future__ import annotations

import pytest
from flask import Flask
from sqlalchemy import select

from services.lead_scoring.jobs.rescore import rescore_step as rescore
from services.lead_scoring.models import Lead, ScoreEntry, outbox
from services.lead_scoring.state import STATE as SCORING_STATE
from shared.events import decode
from tests.unit.lead_scoring.conftest import ADMIN, Feeder, default_rules, scores, seed_three_people


def test_changing_rules_rescores_every_lead_from_history(scoring_app: Flask, feed: Feeder) -> None:
    seed_three_people(feed)
    assert scores(scoring_app) == {
        "keen@x.co": (57, "mql", 0),
        "browser@x.co": (35, "lead", 0),
        "quiet@x.co": (6, "lead", 0),
    }
    document = default_rules()
    form = next(r for r in document["rules"] if r["id"] == "form-submitted")
    form["points"] = 10
    page_view = next(r for r in document["rules"] if r["id"] == "page-view")
    page_view["points"] = 2
    client = scoring_app.test_client()
    response = client.put(
        "/admin/scoring/rules",
        headers=ADMIN,
        json={**document, "mql_threshold": 40, "note": "views matter more"},
    )
    assert response.status_code == 202
    job = response.json
    assert (job["version"], job["total"], job["status"]) == (1, 3, "pending")

    state = scoring_app.extensions[SCORING_STATE]
    assert rescore(state.sessions, state.rule_sets) == 3
    # keen: 5 + 2*2 + 10 = 19, stays MQL (never moved back); browser: 5 + 60 = 65 → MQL
    assert scores(scoring_app) == {
        "keen@x.co": (19, "mql", 1),
        "browser@x.co": (65, "mql", 1),
        "quiet@x.co": (7, "lead", 1),
    }
    with state.sessions() as s:
        total_points = sum(s.scalars(select(ScoreEntry.points)))
    assert total_points == 19 + 65 + 7  # every point still traceable to an entry
    progress = client.get(f"/admin/scoring/rescores/{job['id']}", headers=ADMIN).json
    assert (progress["status"], progress["done"], progress["progress"]) == ("done", 3, 1.0)
    with state.engine.connect() as conn:
        published = [decode(v) for v in conn.execute(select(outbox.c.value)).scalars()]
    moved = [
        e.payload
        for e in published
        if e.type == "lead.stage_changed" and e.payload["changed_by"] == "rescore:v1"
    ]
    assert [(m["lead"]["email"], m["to_stage"]) for m in moved] == [("browser@x.co", "mql")]
    rescored = {
        e.payload["lead"]["email"]: e.payload
        for e in published
        if e.type == "lead.scored"
        and e.payload["points"][:1]
        and e.payload["points"][0]["event_id"] == "rules:v1"
    }
    keen = rescored["keen@x.co"]
    # every point of the rescore explained per rule, adding up to its delta
    assert keen["delta"] == 19 - 57 == sum(p["points"] for p in keen["points"])
    assert {p["rule_id"]: p["points"] for p in keen["points"]} == {
        "form-submitted": 10 - 50,
        "page-view": 4 - 2,
    }
    assert keen["points"][0]["reason"] == "Submitted a form: 50 → 10 points (rules v1)"
    active = client.get("/admin/scoring/rules", headers=ADMIN).json
    assert active["version"] == 1 and active["document"]["mql_threshold"] == 40


def test_a_lead_that_cannot_be_rescored_is_reported_and_the_job_finishes(
    scoring_app: Flask, feed: Feeder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rescore is timer work: one lead whose history cannot be scored (whatever it
    raises) keeps its points, is counted as failed and reported as a dead letter; the
    other leads are rescored and the job completes instead of failing forever."""
    seed_three_people(feed)
    from services.lead_scoring.rulesets import rescoring

    real = rescoring.score_history

    def poisoned(settings, rows, traits, account):  # type: ignore[no-untyped-def]
        if traits.get("email") == "browser@x.co":
            raise ZeroDivisionError("poison in the history")
        return real(settings, rows, traits, account)

    monkeypatch.setattr(rescoring, "score_history", poisoned)
    with scoring_app.extensions[SCORING_STATE].sessions.begin() as s:
        for lead in s.scalars(select(Lead)):
            lead.traits = {**lead.traits, "email": lead.email}
    document = default_rules()
    next(r for r in document["rules"] if r["id"] == "page-view")["points"] = 2
    client = scoring_app.test_client()
    job = client.put("/admin/scoring/rules", headers=ADMIN, json=document).json
    state = scoring_app.extensions[SCORING_STATE]
    while rescore(state.sessions, state.rule_sets, budget_s=5.0):
        pass
    status = client.get(f"/admin/scoring/rescores/{job['id']}", headers=ADMIN).json
    assert (status["status"], status["failed"]) == ("done", 1)
    assert scores(scoring_app)["browser@x.co"] == (35, "lead", 1)  # points kept as they were
    assert scores(scoring_app)["quiet@x.co"][0] == 7  # one page view, now 2 points
    with state.sessions() as s:
        letters = [r for r in s.execute(select(outbox)) if r.topic == "funnel.deadletter"]
    [letter] = letters
    assert letter.headers["dlq.source"] == "timer:rescore"
    assert letter.headers["dlq.reason"] == "ZeroDivisionError: poison in the history"

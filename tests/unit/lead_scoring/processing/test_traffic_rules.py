"""Applying traffic under changing rule sets: a lead is rescored before its next event, and
a stale cache never moves it back."""

from __future__ import annotations

import inspect

from flask import Flask

from services.lead_scoring.jobs.rescore import rescore_step as rescore
from services.lead_scoring.state import STATE as SCORING_STATE
from shared.events import new_event
from tests.unit.lead_scoring.conftest import ADMIN, Feeder, default_rules, scores, seed_three_people


def test_a_lead_is_rescored_before_its_next_event_under_new_rules(
    scoring_app: Flask, feed: Feeder
) -> None:
    seed_three_people(feed)
    document = default_rules()
    next(r for r in document["rules"] if r["id"] == "page-view")["points"] = 3
    scoring_app.test_client().put("/admin/scoring/rules", headers=ADMIN, json=document)
    scoring_app.extensions[SCORING_STATE].rule_sets.invalidate()
    inspect.unwrap(feed.processor.handlers["funnel.traffic"]).keywords["rules"].scoring.invalidate()
    result = feed(new_event("page", {"properties": {"path": "/"}}, source="w", user_id="quiet"))
    # no rescore job ran: quiet was rebuilt (5 + 3) and then scored its new view (+3)
    assert scores(scoring_app)["quiet@x.co"] == (11, "lead", 1)
    [scored] = [o.envelope.payload for o in result.outgoing if o.envelope.type == "lead.scored"]
    assert scored["delta"] == 11 - 6 == sum(p["points"] for p in scored["points"])
    assert [(p["rule_id"], p["points"]) for p in scored["points"]] == [
        ("page-view", 3 - 1),  # the rebuild, under rules v1
        ("page-view", 3),  # the new view
    ]
    assert scored["points"][0]["reason"].endswith("1 → 3 points (rules v1)")
    assert scores(scoring_app)["keen@x.co"][2] == 0  # untouched until the job or an event


def test_a_stale_rule_cache_never_moves_a_lead_back_to_older_rules(
    scoring_app: Flask, feed: Feeder
) -> None:
    feed(new_event("identify", {"traits": {"email": "q@x.co"}}, source="w", user_id="q"))
    handler_cache = (
        inspect.unwrap(feed.processor.handlers["funnel.traffic"]).keywords["rules"].scoring
    )
    assert handler_cache.current(scoring_app.extensions[SCORING_STATE].sessions())[0] == 0
    document = default_rules()
    next(r for r in document["rules"] if r["id"] == "page-view")["points"] = 3
    scoring_app.test_client().put("/admin/scoring/rules", headers=ADMIN, json=document)
    state = scoring_app.extensions[SCORING_STATE]
    rescore(state.sessions, state.rule_sets)  # the job, with a fresh cache: lead at v1
    assert scores(scoring_app)["q@x.co"] == (5, "lead", 1)
    # the consumer's cache still says v0 (its TTL has not passed)
    feed(new_event("page", {"properties": {"path": "/"}}, source="w", user_id="q"))
    assert scores(scoring_app)["q@x.co"] == (8, "lead", 1)  # scored under v1: 5 + 3

"""The scoring model beyond behaviour rules: caps, property conditions, fit, intent,
decay and priority."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask

from services.lead_scoring.model.engagement import bucket, decayed, priority, raw_increment
from services.lead_scoring.model.fit import FitCriterion, grade
from services.lead_scoring.model.intent import topics_of
from services.lead_scoring.model.rules import DEFAULT_RULES, Rule, evaluate
from services.lead_scoring.model.scoring import ScoringModel
from shared.events import new_event
from tests.unit.lead_scoring.conftest import Feeder

T0 = datetime(2026, 6, 1, tzinfo=UTC)
SALES = {"Authorization": "Bearer sales-t"}


def track(name: str, at: datetime = T0, **props):
    return new_event(
        "track", {"event": name, "properties": props}, source="w", anonymous_id="a", occurred_at=at
    )


def page(path: str = "/", *, title: str | None = None, search: str | None = None):
    context = {"page": {"title": title, "search": search}} if title or search else {}
    return new_event(
        "page",
        {"name": title, "properties": {"path": path}},
        source="w",
        anonymous_id="a",
        context=context,
    )


def test_capped_rules_award_at_most_cap_per_period() -> None:
    rule = Rule("cart", "cart", 5, "track", event_name="Product Added", cap=3, cap_period_days=1)
    history = [T0 - timedelta(hours=h) for h in (1, 2, 3)]
    assert evaluate([rule], track("Product Added"), {"cart": history}) == []
    older = [T0 - timedelta(hours=h) for h in (1, 2, 30)]
    assert [a.points for a in evaluate([rule], track("Product Added"), {"cart": older})] == [5]


def test_property_conditions_match_values_and_lists() -> None:
    awards = evaluate(DEFAULT_RULES, track("Trial Started", plan="enterprise"))
    assert [a.rule_id for a in awards] == ["enterprise-trial"]
    assert evaluate(DEFAULT_RULES, track("Trial Started", plan="free")) == []
    assert evaluate(DEFAULT_RULES, track("Trial Started")) == []


def test_fit_grades_from_person_and_account_traits_with_reasons() -> None:
    a = grade({"title": "VP Marketing", "country": "TW"}, {"industry": "SaaS", "employees": 800})
    assert (a.score, a.grade) == (55, "A")
    assert dict(a.reasons) == {
        "Target industry": 15,
        "50+ employees": 10,
        "500+ employees": 10,
        "Decision maker": 15,
        "Served country": 5,
    }
    assert grade({"title": "intern"}, {"employees": "many"}).grade == "D"
    custom = [FitCriterion("edu", "Education", "industry", "eq", "education", 40)]
    assert grade({}, {"industry": "Education"}, custom).grade == "A"
    with pytest.raises(ValueError, match="operator"):
        FitCriterion("x", "x", "a", "like", "b", 1).matches("b")


@pytest.mark.parametrize(
    ("event", "topics"),
    [
        (page("/docs/api-reference"), ["integration"]),
        (page("/blog", title="Migrate from HubSpot: the alternative"), ["migration"]),
        (page("/search", search="?q=SSO+setup"), ["security"]),
        (page("/zh/價格"), ["pricing"]),
        (track("Products Searched", query="webhook retries"), ["integration"]),
        (page("/apiary"), []),  # a keyword inside a word is not a match
        (track("Signed Up"), []),
    ],
)
def test_intent_topics_from_titles_paths_and_searches(event, topics) -> None:
    assert [t.id for t in topics_of(event)] == topics


def test_intent_awards_are_capped_per_day_and_explained() -> None:
    settings = ScoringModel()
    event = page("/docs/api")
    first = [a for a in settings.awards(event, {}) if a.rule_id.startswith("intent:")]
    assert [(a.rule_id, a.points) for a in first] == [("intent:integration", 5)]
    seen_twice = {"intent:integration": [event.occurred_at, event.occurred_at]}
    assert not [a for a in settings.awards(event, seen_twice) if a.rule_id.startswith("intent")]


def test_decay_halves_engagement_every_half_life_and_keeps_order() -> None:
    raw = raw_increment(40, T0, 30)
    assert decayed(raw, T0, 30) == pytest.approx(40)
    assert decayed(raw, T0 + timedelta(days=30), 30) == pytest.approx(20)
    assert decayed(raw, T0 + timedelta(days=90), 30) == pytest.approx(5)
    newer = raw_increment(25, T0 + timedelta(days=30), 30)  # later, fewer points
    assert newer > raw  # ranks higher now: 25 fresh beats 40 a month old (20)
    assert [bucket(x) for x in (75, 45, 12, 3)] == [1, 2, 3, 4]
    assert priority("B", 45) == "B2"


def test_sales_sort_by_priority_fit_first_then_engagement(scoring_app: Flask, feed: Feeder) -> None:
    def person(user: str, title: str, views: int) -> None:
        feed(
            new_event(
                "identify",
                {"traits": {"email": f"{user}@x.co", "title": title, "country": "TW"}},
                source="w",
                user_id=user,
            )
        )
        for _ in range(views):
            feed(new_event("page", {"properties": {"path": "/"}}, source="w", user_id=user))

    person("cto", "CTO", 1)  # fit 20 → C
    person("intern", "Intern", 30)  # fit 5 → D, but busy
    feed(
        new_event(
            "group",
            {"group_id": "acme", "traits": {"industry": "SaaS", "employees": 900}},
            source="w",
            user_id="cto",
        )
    )
    body = scoring_app.test_client().get("/leads", headers=SALES).json
    assert [(x["email"], x["fit_grade"]) for x in body["items"]] == [
        ("cto@x.co", "A"),
        ("intern@x.co", "D"),
    ]
    top = body["items"][0]
    assert top["priority"] == "A4" and top["engagement"] == pytest.approx(6, abs=0.1)
    only_d = scoring_app.test_client().get("/leads?fit_grade=D", headers=SALES).json
    assert [x["email"] for x in only_d["items"]] == ["intern@x.co"]
    detail = scoring_app.test_client().get(f"/leads/{top['id']}", headers=SALES).json
    assert {r["label"] for r in detail["fit_reasons"]} >= {"Decision maker", "Target industry"}


def test_kept_properties_are_bounded_and_the_shortcut_never_misjudges() -> None:
    import json
    import random

    from services.lead_scoring.model.history import MAX_KEPT_BYTES, _bounded, _surely_small

    rng = random.Random(7)
    alphabet = ["a", "é", "\n", "\u0001", "價", "😀", '"']
    for _ in range(2000):
        props = {
            "".join(rng.choices(alphabet, k=rng.randint(1, 40))): rng.choice(
                [
                    "".join(rng.choices(alphabet, k=rng.randint(0, 400))),
                    rng.randint(-(10**17), 10**17),
                    rng.random() * 10 ** rng.randint(-300, 300),
                    None,
                    True,
                ]
            )
            for _ in range(rng.randint(0, 30))
        }
        if _surely_small(props):
            assert len(json.dumps(props, default=str)) <= MAX_KEPT_BYTES
    huge = {"note": "x" * 20_000, "plan": "pro", "nested": {"a": 1}, "n": 10**30}
    assert not _surely_small(huge)
    assert _bounded(huge) == {"note": "x" * 500, "plan": "pro", "n": 10**30}
    assert _bounded({"path": "/docs", "n": 3}) == {"path": "/docs", "n": 3}

"""Behaviour rules: what an event earns, with its reason; caps, conditions, purchases."""

from __future__ import annotations

from services.lead_scoring.model.rules import DEFAULT_RULES, Rule, evaluate, is_purchase, page_path
from services.lead_scoring.model.scoring import ScoringModel
from shared.events import new_event


def page(path: str, *, in_context: bool = False):
    if in_context:
        return new_event(
            "page",
            {"properties": {}},
            source="w",
            anonymous_id="a",
            context={"page": {"path": path}},
        )
    return new_event("page", {"properties": {"path": path}}, source="w", anonymous_id="a")


def track(name: str):
    return new_event("track", {"event": name}, source="w", anonymous_id="a")


SETTINGS = ScoringModel()


def test_page_view_and_pricing_intent_award_with_reasons() -> None:
    awards = SETTINGS.awards(page("/pricing/enterprise"), {})
    assert {(a.rule_id, a.points) for a in awards} == {("page-view", 1), ("intent:pricing", 10)}
    assert all(a.reason for a in awards)


def test_path_falls_back_to_context_page() -> None:
    assert page_path(page("/pricing", in_context=True)) == "/pricing"
    awards = SETTINGS.awards(page("/pricing", in_context=True), {})
    assert [a.rule_id for a in awards] == ["page-view", "intent:pricing"]


def test_one_time_rules_award_once_repeatable_rules_every_time() -> None:
    signed_up = track("Signed Up")
    assert [a.rule_id for a in evaluate(DEFAULT_RULES, signed_up, {"signed-up"})] == []
    assert [a.rule_id for a in evaluate(DEFAULT_RULES, signed_up)] == ["signed-up"]
    assert [
        a.points for a in evaluate(DEFAULT_RULES, track("Form Submitted"), {"form-submitted"})
    ] == [50]


def test_negative_points_and_unmatched_events() -> None:
    assert [a.points for a in evaluate(DEFAULT_RULES, track("Form Error"))] == [-5]
    assert evaluate(DEFAULT_RULES, track("Something Else")) == []


def test_rule_matches_name_and_type_together() -> None:
    rule = Rule("r", "r", 3, "track", event_name="Signed Up")
    assert rule.matches(track("Signed Up"))
    assert not rule.matches(track("Signed Out"))
    assert not rule.matches(page("/Signed Up"))


def test_purchase_detection() -> None:
    assert is_purchase(track("Order Completed"))
    assert not is_purchase(track("Order Started"))

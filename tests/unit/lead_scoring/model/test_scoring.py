"""The scoring model as a whole: capped rules per period and property conditions through
its awards."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.lead_scoring.model.rules import DEFAULT_RULES, Rule, evaluate
from shared.events import new_event

T0 = datetime(2026, 6, 1, tzinfo=UTC)


def track(name: str, at: datetime = T0, **props):
    return new_event(
        "track", {"event": name, "properties": props}, source="w", anonymous_id="a", occurred_at=at
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

"""Intent topics from titles, paths and searches; capped per day and explained."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.lead_scoring.model.intent import topics_of
from services.lead_scoring.model.scoring import ScoringModel
from shared.events import new_event

T0 = datetime(2026, 6, 1, tzinfo=UTC)


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

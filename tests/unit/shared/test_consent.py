"""Consent decisions read from context and identify traits."""

from __future__ import annotations

from typing import Any

import pytest

from shared.consent import (
    ADVERTISING,
    ANALYTICS,
    CATEGORIES,
    MARKETING,
    PURPOSES,
    decisions,
)


def context_with(preferences: Any) -> dict[str, Any]:
    return {"consent": {"categoryPreferences": preferences}}


# ---------------------------------------------------------------- categoryPreferences


@pytest.mark.parametrize(("category", "purpose"), sorted(CATEGORIES.items()))
def test_each_category_maps_to_its_purpose(category: str, purpose: str) -> None:
    assert decisions(context_with({category: True}), None) == {purpose: True}
    assert decisions(context_with({category: False}), None) == {purpose: False}


def test_category_mapping() -> None:
    assert CATEGORIES["performance"] == ANALYTICS
    assert CATEGORIES["statistics"] == ANALYTICS
    assert CATEGORIES["email"] == MARKETING
    assert CATEGORIES["communications"] == MARKETING
    assert CATEGORIES["targeting"] == ADVERTISING
    assert CATEGORIES["ads"] == ADVERTISING
    assert set(CATEGORIES.values()) == set(PURPOSES)


@pytest.mark.parametrize("name", ["Marketing", "MARKETING", "  marketing ", "\tEmail\n", "eMaIl"])
def test_category_names_ignore_case_and_surrounding_space(name: str) -> None:
    assert decisions(context_with({name: True}), None) == {MARKETING: True}


def test_several_categories_at_once() -> None:
    got = decisions(
        context_with({"Analytics": True, "Advertising": False, "Marketing": True}), None
    )
    assert got == {ANALYTICS: True, ADVERTISING: False, MARKETING: True}


def test_conflicting_categories_of_one_purpose_deny_in_any_order() -> None:
    """Regression (review finding 4): ``{"marketing": false, "email": true}`` granted
    marketing because the later key won."""
    assert decisions(context_with({"targeting": True, "ads": False}), None) == {ADVERTISING: False}
    assert decisions(context_with({"ads": False, "targeting": True}), None) == {ADVERTISING: False}
    assert decisions(context_with({"marketing": False, "email": True}), None) == {MARKETING: False}
    assert decisions({}, {"consent": {"email": True, "marketing": False}}) == {MARKETING: False}


def test_every_category_of_a_purpose_granting_grants_it() -> None:
    got = decisions(context_with({"marketing": True, "email": True, "ads": True}), None)
    assert got == {MARKETING: True, ADVERTISING: True}


@pytest.mark.parametrize("name", ["functional", "necessary", "market ing", "", "personalization"])
def test_unknown_categories_are_ignored(name: str) -> None:
    assert decisions(context_with({name: True}), None) == {}


def test_nothing_stated_is_nothing_decided() -> None:
    assert decisions({}, None) == {}
    assert decisions({}, {}) == {}
    assert decisions({"consent": {}}, {"email": "a@example.com"}) == {}


# ------------------------------------------------------------------ non-bool and junk


@pytest.mark.parametrize("value", ["true", "yes", 1, 0, None, [True], {"granted": True}, 1.0])
def test_non_bool_values_are_ignored(value: Any) -> None:
    assert decisions(context_with({"marketing": value}), None) == {}
    assert decisions({}, {"consent": {"marketing": value}}) == {}


@pytest.mark.parametrize(
    "context",
    [
        {"consent": "granted"},
        {"consent": ["marketing"]},
        {"consent": None},
        {"consent": True},
        {"consent": {"categoryPreferences": ["marketing", True]}},
        {"consent": {"categoryPreferences": "marketing"}},
        {"consent": {"categoryPreferences": None}},
        {"consent": {"categoryPreferences": 1}},
        {"consent": {"marketing": True}},  # not under categoryPreferences
        {"categoryPreferences": {"marketing": True}},  # not under consent
    ],
)
def test_junk_context_shapes_are_ignored(context: dict[str, Any]) -> None:
    assert decisions(context, None) == {}


@pytest.mark.parametrize(
    "traits",
    [
        {"consent": "granted"},
        {"consent": ["marketing"]},
        {"consent": None},
        {"consent": {"categoryPreferences": {"marketing": True}}},
        {"unsubscribed": "true"},
        {"unsubscribed": 1},
        {"unsubscribed": False},
        {"unsubscribed": None},
    ],
)
def test_junk_trait_shapes_are_ignored(traits: dict[str, Any]) -> None:
    assert decisions({}, traits) == {}


def test_non_text_category_names_are_read_as_text() -> None:
    assert decisions(context_with({1: True, None: False}), None) == {}


def test_at_most_50_entries_are_read() -> None:
    preferences: dict[str, Any] = {f"vendor-{i}": True for i in range(49)}
    preferences["marketing"] = True  # the 50th entry: read
    preferences["analytics"] = True  # the 51st: not read
    assert decisions(context_with(preferences), None) == {MARKETING: True}
    assert decisions({}, {"consent": preferences}) == {MARKETING: True}


def test_huge_preferences_are_bounded() -> None:
    preferences = {f"vendor-{i}": True for i in range(100_000)}
    preferences["advertising"] = True
    assert decisions(context_with(preferences), None) == {}


# ------------------------------------------------------------------------------- traits


def test_traits_consent_is_read_like_category_preferences() -> None:
    assert decisions({}, {"consent": {" Statistics": True, "Targeting": False}}) == {
        ANALYTICS: True,
        ADVERTISING: False,
    }


def test_traits_and_context_of_one_event_deny_when_they_conflict() -> None:
    context = context_with({"marketing": True, "analytics": True})
    got = decisions(context, {"consent": {"marketing": False}})
    assert got == {MARKETING: False, ANALYTICS: True}
    got = decisions(context_with({"ads": False}), {"consent": {"advertising": True}})
    assert got == {ADVERTISING: False}
    got = decisions(context_with({"ads": True}), {"consent": {"advertising": True}})
    assert got == {ADVERTISING: True}


def test_unsubscribed_withdraws_marketing() -> None:
    assert decisions({}, {"unsubscribed": True}) == {MARKETING: False}


def test_unsubscribed_overrides_every_grant() -> None:
    got = decisions(
        context_with({"marketing": True, "analytics": True}),
        {"consent": {"email": True}, "unsubscribed": True},
    )
    assert got == {MARKETING: False, ANALYTICS: True}


def test_unsubscribed_touches_only_marketing() -> None:
    got = decisions(context_with({"advertising": True}), {"unsubscribed": True})
    assert got == {ADVERTISING: True, MARKETING: False}


def test_the_inputs_are_not_changed() -> None:
    context = context_with({"marketing": True})
    traits = {"consent": {"ads": True}, "unsubscribed": True}
    decisions(context, traits)
    assert context == context_with({"marketing": True})
    assert traits == {"consent": {"ads": True}, "unsubscribed": True}


# ------------------------------------------------------------------------------ channels

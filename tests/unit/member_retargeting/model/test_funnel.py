"""The funnel's pure rules: stages, first touch, rates and medians."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from services.member_retargeting.model.funnel import (
    STAGES,
    StageCounts,
    Touch,
    better_touch,
    funnel_stage,
    median_seconds,
    ordered_channels,
    rate,
    touch,
)
from shared.events import STAGES as LEAD_STAGES

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def test_every_lead_stage_is_a_funnel_step_or_moves_nobody() -> None:
    assert {funnel_stage(s) for s in LEAD_STAGES} == {*STAGES[:-1], None}
    assert funnel_stage("recycled") is None and funnel_stage("disqualified") is None
    assert funnel_stage("opportunity") == "sql"  # past SQL, not yet bought


def test_touch_reads_intakes_classification_and_keeps_only_the_path() -> None:
    context = {
        "traffic_source": {"channel": "organic_search", "engine": "google", "utm_campaign": "q4"},
        "page": {"url": "https://shop.example/pricing?email=a@b.co#top"},
    }
    assert touch("page", context) == Touch("organic_search", "google", "/pricing", "q4", True)


def test_a_malformed_context_reads_as_direct() -> None:
    for context in ({}, {"traffic_source": "x", "page": 3}, {"traffic_source": {"channel": 5}}):
        found = touch("track", context)
        assert (found.channel, found.landing_page, found.from_page) == ("direct", None, False)
    assert touch("page", {"page": {"url": "http://[::1"}}).landing_page is None  # unparsable


def test_a_page_beats_an_earlier_event_without_one_and_a_channel_beats_internal() -> None:
    server = Touch("direct", None, None, None, False)
    page = Touch("paid_search", "google", "/", None, True)
    internal = Touch("internal", None, "/docs", None, True)
    assert better_touch(server, T0, page, T0 + timedelta(hours=1))
    assert not better_touch(page, T0 + timedelta(hours=1), server, T0)
    assert better_touch(internal, T0, page, T0 + timedelta(minutes=5))
    assert better_touch(page, T0 + timedelta(hours=1), page, T0)  # then the earlier wins
    assert not better_touch(page, T0, page, T0 + timedelta(hours=1))
    assert better_touch(None, None, server, T0)


def test_stage_rows_give_rates_from_the_stage_before_and_from_visitors() -> None:
    rows = StageCounts((200, 50, 20, 10, 5, 4)).rows()
    assert [r["stage"] for r in rows] == list(STAGES)
    assert rows[0]["rate_from_previous"] is None and rows[0]["rate_from_visitor"] == 1.0
    assert rows[1]["rate_from_previous"] == 0.25
    assert rows[4]["rate_from_previous"] == 0.5 and rows[4]["rate_from_visitor"] == 0.025
    assert StageCounts((0,) * 6).rows()[2]["rate_from_previous"] is None


@given(st.lists(st.integers(0, 10_000), min_size=6, max_size=6))
def test_rates_of_a_monotone_funnel_are_fractions(values: list[int]) -> None:
    counts = tuple(sorted(values, reverse=True))
    for row in StageCounts(counts).rows():
        for key in ("rate_from_previous", "rate_from_visitor"):
            assert row[key] is None or 0.0 <= row[key] <= 1.0


def test_medians_use_only_people_with_both_times_and_never_go_negative() -> None:
    rows = [
        {"first_seen_at": T0, "lead_at": T0 + timedelta(seconds=10)},
        {"first_seen_at": T0, "lead_at": T0 + timedelta(seconds=30)},
        {"first_seen_at": T0, "lead_at": T0 + timedelta(seconds=50), "mql_at": None},
        {"first_seen_at": T0, "lead_at": None},
        {"customer_at": T0, "member_at": T0 - timedelta(seconds=2)},  # raced: 0, not -2
    ]
    medians = median_seconds(rows)
    assert medians["visitor_to_lead"] == 30
    assert medians["lead_to_mql"] is None
    assert medians["customer_to_member"] == 0


def test_rate_and_channel_order() -> None:
    assert rate(1, 3) == 0.3333 and rate(1, 0) is None
    assert ordered_channels(["direct", "weird", "organic_search", "email"]) == [
        "organic_search",
        "email",
        "direct",
        "weird",
    ]

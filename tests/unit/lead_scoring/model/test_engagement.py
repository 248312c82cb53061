"""Engagement decay and the priority sales sort by."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.lead_scoring.model.engagement import bucket, decayed, priority, raw_increment

T0 = datetime(2026, 6, 1, tzinfo=UTC)


def test_decay_halves_engagement_every_half_life_and_keeps_order() -> None:
    raw = raw_increment(40, T0, 30)
    assert decayed(raw, T0, 30) == pytest.approx(40)
    assert decayed(raw, T0 + timedelta(days=30), 30) == pytest.approx(20)
    assert decayed(raw, T0 + timedelta(days=90), 30) == pytest.approx(5)
    newer = raw_increment(25, T0 + timedelta(days=30), 30)  # later, fewer points
    assert newer > raw  # ranks higher now: 25 fresh beats 40 a month old (20)
    assert [bucket(x) for x in (75, 45, 12, 3)] == [1, 2, 3, 4]
    assert priority("B", 45) == "B2"


def test_far_past_events_decay_to_nothing() -> None:
    assert raw_increment(100, datetime(1970, 1, 1, tzinfo=UTC), 1.0) == 0.0
    assert raw_increment(1, datetime(9999, 1, 1, tzinfo=UTC), 1.0) < float("inf")
    now = datetime.now(UTC)
    assert raw_increment(1, now - timedelta(days=30), 30.0) < raw_increment(1, now, 30.0)

"""Engagement with decay, and the fit x engagement priority sales sorts by. Pure.

Engagement is the lead's points, each fading with a half-life (default 30 days): a lead
that went quiet cools down. Stored as ``raw = Σ points x 2^((t - EPOCH) / half_life)``;
the engagement at any moment ``now`` is ``raw x 2^(-(now - EPOCH) / half_life)``. The
factor is the same for every lead, so ordering by ``raw`` in SQL is ordering by
engagement now — no job has to re-decay every lead. (Float range: 2^(years x 12) for a
30-day half-life stays far inside a double for centuries.)

Priority: fit grade A-D x engagement bucket 1-4 (1 = hottest), e.g. ``A1``.
"""

from __future__ import annotations

from datetime import UTC, datetime

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
DEFAULT_HALF_LIFE_DAYS = 30.0
# Bucket floors on decayed engagement, hottest first.
BUCKETS: tuple[tuple[int, float], ...] = ((1, 60.0), (2, 30.0), (3, 10.0), (4, float("-inf")))


def _days(at: datetime) -> float:
    return (at - EPOCH).total_seconds() / 86400


def raw_increment(points: float, at: datetime, half_life_days: float) -> float:
    return points * 2 ** (_days(at) / half_life_days)


def decayed(raw: float, now: datetime, half_life_days: float) -> float:
    return raw * 2 ** (-_days(now) / half_life_days)


def bucket(engagement: float, buckets: tuple[tuple[int, float], ...] = BUCKETS) -> int:
    return next(b for b, floor in buckets if engagement >= floor)


def priority(fit_grade: str, engagement: float) -> str:
    return f"{fit_grade}{bucket(engagement)}"

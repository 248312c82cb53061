"""Engagement with decay, and the fit x engagement priority sales sorts by. Pure.

Engagement is the lead's points, each fading with a half-life (default 30 days): a lead
that went quiet cools down. Stored as ``raw = Σ points x 2^((t - EPOCH) / half_life)``;
the engagement at any moment ``now`` is ``raw x 2^(-(now - EPOCH) / half_life)``. The
factor is the same for every lead, so ordering by ``raw`` in SQL is ordering by
engagement now — no job has to re-decay every lead.

Float range: the exponent is capped at :data:`MAX_EXPONENT` half-lives after ``EPOCH``, so
no time overflows (a double holds 2^1023); ordering is exact until then — for the default
30-day half-life, until the year 2105 (a re-basing job is the way past it). Event times
come from :attr:`Envelope.effective_at`, so a client's far-future timestamp cannot pin a
lead at the top of the queue; far-past ones decay to nothing, as old events should.

Priority: fit grade A-D x engagement bucket 1-4 (1 = hottest), e.g. ``A1``.
"""

from __future__ import annotations

from datetime import UTC, datetime

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
DEFAULT_HALF_LIFE_DAYS = 30.0
# Bucket floors on decayed engagement, hottest first.
BUCKETS: tuple[tuple[int, float], ...] = ((1, 60.0), (2, 30.0), (3, 10.0), (4, float("-inf")))


# 2^960 x (a lifetime of points) stays inside a double.
MAX_EXPONENT = 960.0


def _half_lives(at: datetime, half_life_days: float) -> float:
    return min((at - EPOCH).total_seconds() / 86400 / half_life_days, MAX_EXPONENT)


def raw_increment(points: float, at: datetime, half_life_days: float) -> float:
    return points * 2 ** _half_lives(at, half_life_days)


def decayed(raw: float, now: datetime, half_life_days: float) -> float:
    return raw * 2 ** -_half_lives(now, half_life_days)


def bucket(engagement: float, buckets: tuple[tuple[int, float], ...] = BUCKETS) -> int:
    return next(b for b, floor in buckets if engagement >= floor)


def priority(fit_grade: str, engagement: float) -> str:
    return f"{fit_grade}{bucket(engagement)}"

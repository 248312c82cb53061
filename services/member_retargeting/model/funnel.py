"""The funnel as marketing reads it: visitor → lead → MQL → SQL → customer → member.
Pure (no database, no Flask).

Lead-scoring's lifecycle has more stages than the funnel shows: a ``subscriber`` is an
anonymous visitor, an ``opportunity`` has passed SQL without buying yet, ``recycled`` and
``disqualified`` are sales decisions that never undo how far a person got. A person has
*reached* a stage when they reached it or any stage after it (a buyer who skipped the
MQL threshold still passed through the funnel's MQL step), so each stage's count is at
most the one before it and every conversion rate is between 0 and 1.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from shared.limits import truncate

STAGES = ("visitor", "lead", "mql", "sql", "customer", "member")
RANK = {stage: i for i, stage in enumerate(STAGES)}
# Lead-scoring's stages as funnel steps (the ones not named never move a person on).
FROM_LEAD_STAGE = {
    "subscriber": "visitor",
    "lead": "lead",
    "mql": "mql",
    "sql": "sql",
    "opportunity": "sql",
    "customer": "customer",
}
# The channels intake's classifier names (services/traffic_intake/channels.py), in the
# order reports show them; "internal" (a page reached from the site itself) is not a
# channel a visit starts from, so a first touch never keeps it if a page says more.
CHANNELS = (
    "organic_search",
    "paid_search",
    "paid_social",
    "organic_social",
    "email",
    "referral",
    "direct",
)
# The times between steps a report gives medians for: (name, from column, to column).
STEPS = (
    ("visitor_to_lead", "first_seen_at", "lead_at"),
    ("lead_to_mql", "lead_at", "mql_at"),
    ("mql_to_sql", "mql_at", "sql_at"),
    ("sql_to_customer", "sql_at", "customer_at"),
    ("customer_to_member", "customer_at", "member_at"),
)


def funnel_stage(lead_stage: str) -> str | None:
    """The funnel step a lead-scoring stage is, or None for one that moves nobody on."""
    return FROM_LEAD_STAGE.get(lead_stage)


@dataclass(frozen=True)
class Touch:
    """Where a visit came from, as intake classified it (``context.traffic_source``),
    with the page it landed on (path only: a query string can carry an e-mail)."""

    channel: str
    engine: str | None
    landing_page: str | None
    campaign: str | None
    from_page: bool  # the event was a page view or carried one


def touch(event_type: str, context: Mapping[str, Any]) -> Touch:
    """The first-touch facts one event carries; anything malformed reads as direct."""
    source = context.get("traffic_source")
    source = source if isinstance(source, dict) else {}
    channel = source.get("channel")
    page = context.get("page")
    page = page if isinstance(page, dict) else {}
    landing = _path(page.get("url")) or _text(page.get("path"))
    return Touch(
        channel=channel if isinstance(channel, str) and channel else "direct",
        engine=_text(source.get("engine")),
        landing_page=landing,
        campaign=_text(source.get("utm_campaign")),
        from_page=event_type == "page" or landing is not None,
    )


def better_touch(
    held: Touch | None, held_at: datetime | None, new: Touch, new_at: datetime
) -> bool:
    """Whether ``new`` should replace the first touch held: a page beats an event
    without one, a real channel beats ``internal``, then the earlier one wins."""
    if held is None or held_at is None:
        return True

    def weight(t: Touch) -> tuple[bool, bool]:
        return (t.from_page, t.channel != "internal")

    if weight(new) != weight(held):
        return weight(new) > weight(held)
    return new_at < held_at


def _path(url: Any) -> str | None:
    if not isinstance(url, str) or not url:
        return None
    try:
        path = urlsplit(url[:2000]).path
    except ValueError:
        return None
    return _text(path or "/")


def _text(value: Any) -> str | None:
    return truncate(value.strip(), 200) or None if isinstance(value, str) else None


@dataclass(frozen=True)
class StageCounts:
    """How many people of a cohort reached each stage (``counts[i]`` for ``STAGES[i]``)."""

    counts: tuple[int, ...]

    def rows(self) -> list[dict[str, Any]]:
        """Each stage with its count, the rate from the stage before and from visitors."""
        out = []
        for i, stage in enumerate(STAGES):
            count = self.counts[i]
            out.append(
                {
                    "stage": stage,
                    "count": count,
                    "rate_from_previous": rate(count, self.counts[i - 1]) if i else None,
                    "rate_from_visitor": rate(count, self.counts[0]),
                }
            )
        return out


def rate(part: int, whole: int) -> float | None:
    """``part / whole`` rounded to 4 places; None when there is no whole."""
    return round(part / whole, 4) if whole else None


def median_seconds(rows: Iterable[Mapping[str, Any]]) -> dict[str, float | None]:
    """Per step, the median seconds between reaching one stage and the next, over the
    people with both times (None when nobody has). A step whose times are out of order
    (events of two services racing) counts as 0 s, never as negative."""
    spans: dict[str, list[float]] = {name: [] for name, _, _ in STEPS}
    for row in rows:
        for name, start, end in STEPS:
            a, b = row.get(start), row.get(end)
            if a is not None and b is not None:
                spans[name].append(max(0.0, (b - a).total_seconds()))
    return {name: statistics.median(v) if v else None for name, v in spans.items()}


def ordered_channels(found: Sequence[str]) -> list[str]:
    """The channels found, known ones in report order, then any other names sorted."""
    known = [c for c in CHANNELS if c in found]
    return known + sorted(set(found) - set(known))

"""Events that got past intake some other way (a replay, an older producer) cannot stop the
scoring consumer or flood its store: on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Flask
from sqlalchemy import func, select

from services.lead_scoring.model.engagement import raw_increment
from services.lead_scoring.models import Identity, Lead, LeadMerge, Rep, StageChange
from services.lead_scoring.state import STATE as SCORING_STATE
from shared.events import new_event
from shared.limits import FUTURE_TOLERANCE, MAX_ANONYMOUS_IDS, MAX_TRAIT_KEYS
from tests.unit.lead_scoring.conftest import Feeder


def _lead(app: Flask, user_id: str) -> Lead:
    with app.extensions[SCORING_STATE].sessions() as s:
        lead = s.scalar(select(Lead).where(Lead.user_id == user_id, Lead.merged_into.is_(None)))
        assert lead is not None
        return lead


def test_impossible_times_are_scored_not_fatal(scoring_app: Flask, feed: Feeder) -> None:
    now = datetime.now(UTC)
    events = [
        new_event("page", {"properties": {}}, source="t", user_id="u", occurred_at=at)
        for at in (
            datetime(1, 1, 1, tzinfo=UTC),
            datetime(9999, 12, 31, 23, 59, tzinfo=UTC),
            now,
        )
    ]
    result = feed(*events)
    assert (result.applied, result.dead_letters) == (3, [])
    lead = _lead(scoring_app, "u")
    assert lead.score == 3
    # The year-9999 event counts as "now" (+ tolerance), not as the hottest lead forever.
    assert lead.last_event_at is not None
    assert lead.last_event_at <= datetime.now(UTC) + FUTURE_TOLERANCE
    assert lead.engagement_raw <= 3 * raw_increment(1, now + FUTURE_TOLERANCE, 30.0)


def test_long_values_fit_their_columns(scoring_app: Flask, feed: Feeder) -> None:
    """A merge reason names the source and the identifier that linked two leads (up to
    540 characters), a rep name can be 200: both land in shorter columns, cut with a
    marker."""
    long_id, source, email = "x" * 200, "s" * 200, f"{'e' * 300}@x.co"
    feed(new_event("identify", {"traits": {"email": email}}, source=source, anonymous_id="a1"))
    feed(new_event("identify", {"traits": {}}, source=source, user_id=long_id))
    result = feed(
        new_event("identify", {"traits": {"email": email}}, source=source, user_id=long_id)
    )
    assert result.dead_letters == []
    with scoring_app.extensions[SCORING_STATE].sessions() as s:
        [merge] = s.scalars(select(LeadMerge))
        assert len(merge.reason) <= 500 and merge.reason.endswith("…")
        s.add(Rep(name="R" * 200, email="r@x.co", countries=[], industries=[]))
        s.commit()
    feed(
        new_event(
            "track", {"event": "Form Submitted", "properties": {}}, source="t", user_id=long_id
        )
    )
    with scoring_app.extensions[SCORING_STATE].sessions() as s:
        assert all(len(c.changed_by) <= 100 for c in s.scalars(select(StageChange)))


def test_a_leads_traits_are_capped(scoring_app: Flask, feed: Feeder) -> None:
    for batch in range(3):
        traits = {f"t{batch}-{i}": i for i in range(150)}
        feed(new_event("identify", {"traits": traits}, source="t", user_id="u"))
    lead = _lead(scoring_app, "u")
    assert len(lead.traits) == MAX_TRAIT_KEYS
    assert "t2-149" in lead.traits and "t0-0" not in lead.traits


def test_a_leads_anonymous_ids_are_capped(scoring_app: Flask, feed: Feeder) -> None:
    """A bot cycling anonymous ids under one user id does not grow the lead (or every
    snapshot it publishes) without bound; merges trim the oldest."""
    result = feed(
        *(
            new_event("page", {"properties": {}}, source="t", user_id="u", anonymous_id=f"a{i}")
            for i in range(MAX_ANONYMOUS_IDS + 30)
        )
    )
    assert result.dead_letters == []
    snapshot = result.outgoing[-1].envelope.payload["lead"]
    assert len(snapshot["anonymous_ids"]) == MAX_ANONYMOUS_IDS
    # Another person's lead with 50 anonymous ids merged in: still capped.
    feed(
        *(
            new_event("page", {"properties": {}}, source="t", user_id="v", anonymous_id=f"b{i}")
            for i in range(50)
        )
    )
    feed(new_event("alias", {"previous_id": "v"}, source="t", user_id="u"))
    with scoring_app.extensions[SCORING_STATE].sessions() as s:
        lead_id = _lead(scoring_app, "u").id
        count = s.scalar(
            select(func.count())
            .select_from(Identity)
            .where(Identity.lead_id == lead_id, Identity.kind == "anonymous_id")
        )
    assert count == MAX_ANONYMOUS_IDS


def test_snapshots_count_up(feed: Feeder) -> None:
    first = feed(new_event("page", {"properties": {}}, source="t", user_id="u"))
    later = feed(
        new_event("track", {"event": "Form Submitted", "properties": {}}, source="t", user_id="u")
    )
    versions = [o.envelope.payload["lead"]["version"] for o in (*first.outgoing, *later.outgoing)]
    assert versions == sorted(versions) and versions[0] >= 1
    assert len(set(versions)) >= 2

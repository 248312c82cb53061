"""Routing is pure: the most specific territory, then round robin."""

from __future__ import annotations

from datetime import UTC, datetime

from services.lead_scoring.handoff.routing import Candidate, choose_rep

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def rep(id_: int, countries=(), industries=(), last=None, available=True) -> Candidate:
    return Candidate(id_, f"rep{id_}", available, tuple(countries), tuple(industries), last)


def test_routing_prefers_the_most_specific_territory_then_round_robin() -> None:
    reps = [
        rep(1),
        rep(2, ["TW"]),
        rep(3, ["TW"], ["software"], last=T0),
        rep(4, ["TW"], ["software"]),
        rep(5, ["TW"], ["software"], available=False),
    ]
    chosen = choose_rep({"country": "tw"}, {"industry": "Software"}, reps)
    assert chosen is not None and chosen.rep_id == 4  # never assigned beats assigned at T0
    assert "country=tw" in chosen.reason and "industry=software" in chosen.reason
    assert choose_rep({"country": "JP"}, {}, reps).rep_id == 1  # type: ignore[union-attr]
    assert choose_rep({}, {}, [rep(2, ["TW"])]) is None
    assert choose_rep({"address": {"country": "TW"}}, {}, [rep(2, ["TW"])]).rep_id == 2  # type: ignore[union-attr]

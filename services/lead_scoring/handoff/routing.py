"""Routing new MQLs to reps. Pure.

Candidates are the available reps whose territory covers the lead: a rep's country list
and industry list each match when empty ("anywhere") or when they contain the lead's
value. The most specific candidates win (a rep for TW/Software beats a rep for anywhere),
and among those the one assigned least recently gets the lead (round robin). No candidate
→ no owner; the lead waits in the unassigned queue.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Candidate:
    id: int
    name: str
    available: bool
    countries: tuple[str, ...]
    industries: tuple[str, ...]
    last_assigned_at: datetime | None


@dataclass(frozen=True)
class Assignment:
    rep_id: int
    rep_name: str
    reason: str


def _norm(value: Any) -> str | None:
    return value.strip().lower() if isinstance(value, str) and value.strip() else None


def lead_territory(
    traits: Mapping[str, Any], account: Mapping[str, Any]
) -> tuple[str | None, str | None]:
    """(country, industry) of a lead, lower-cased: person traits first for the country
    (Segment's ``address.country`` too), the account (group traits) first for industry."""
    address = traits.get("address")
    country = traits.get("country") or account.get("country")
    if country is None and isinstance(address, dict):
        country = address.get("country")
    return _norm(country), _norm(account.get("industry") or traits.get("industry"))


def choose_rep(
    traits: Mapping[str, Any], account: Mapping[str, Any], reps: Sequence[Candidate]
) -> Assignment | None:
    country, industry = lead_territory(traits, account)
    best: list[tuple[int, Candidate]] = []
    for rep in reps:
        if not rep.available:
            continue
        countries = {c.lower() for c in rep.countries}
        industries = {i.lower() for i in rep.industries}
        if countries and country not in countries:
            continue
        if industries and industry not in industries:
            continue
        best.append((bool(countries) + bool(industries), rep))
    if not best:
        return None
    top = max(spec for spec, _ in best)
    pool = [rep for spec, rep in best if spec == top]
    chosen = min(
        pool,
        key=lambda r: (r.last_assigned_at is not None, r.last_assigned_at or datetime.min, r.id),
    )
    why = []
    if chosen.countries:
        why.append(f"country={country}")
    if chosen.industries:
        why.append(f"industry={industry}")
    territory = "territory " + ", ".join(why) if why else "no territory rule"
    return Assignment(chosen.id, chosen.name, f"{territory}; round robin among {len(pool)}")

"""A lead's event history as stored, and scoring it again from scratch. Pure.

``history_fields`` decides what of an event is kept (type, name, path, properties, page
context: everything a behaviour rule or an intent topic can look at); ``as_event``
rebuilds an envelope from a stored row; ``score_history`` replays a whole history under a
rule set, giving the same awards the live handler gives event by event.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from services.lead_scoring.model.engagement import raw_increment
from services.lead_scoring.model.fit import grade
from services.lead_scoring.model.intent import with_intent
from services.lead_scoring.model.rules import Award, page_path
from shared.events import Envelope
from shared.identity import ANONYMOUS_ID, USER_ID

if TYPE_CHECKING:
    from services.lead_scoring.model.scoring import ScoringModel

MAX_KEPT_BYTES = 8 * 1024  # properties beyond this are cut to their scalar fields
PAGE_KEYS = ("path", "title", "search", "url", "referrer")


def _surely_small(properties: Mapping[str, Any]) -> bool:
    """True when flat scalar properties cannot reach MAX_KEPT_BYTES as JSON even if every
    character were escaped (at most 12 bytes each): spares the hot path a json.dumps."""
    chars = 0
    for key, value in properties.items():
        if isinstance(value, str):
            chars += len(value)
        elif (
            value is None
            or isinstance(value, float)
            or (isinstance(value, int) and -(10**18) < value < 10**18)
        ):
            chars += 25  # the longest float repr, e.g. -2.2250738585072014e-308
        else:
            return False
        chars += len(key) + 4
    return 12 * chars + 32 < MAX_KEPT_BYTES


def _bounded(properties: Mapping[str, Any]) -> dict[str, Any]:
    kept = dict(properties)
    if _surely_small(kept):
        return kept
    if len(json.dumps(kept, default=str)) > MAX_KEPT_BYTES:
        kept = {k: v for k, v in kept.items() if isinstance(v, str | int | float | bool)}
        kept = {k: v[:500] if isinstance(v, str) else v for k, v in kept.items()}
    return kept


def history_fields(event: Envelope, identities: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
    """What a lead keeps of an event: what a rule can look at (type, name, path,
    properties, page context), and enough to apply it again (the identifiers it named,
    its source, what identify / group / alias said)."""
    page = event.context.get("page")
    page_context = (
        {k: page[k] for k in PAGE_KEYS if isinstance(page.get(k), str)}
        if isinstance(page, dict)
        else {}
    )
    path = page_path(event) if event.type in ("page", "screen") else None
    payload: dict[str, Any] = {}
    if event.type in ("identify", "group"):
        payload = {k: v for k, v in event.payload.items() if k != "traits"}
        payload["traits"] = _bounded(event.payload.get("traits") or {})
    elif event.type == "alias":
        payload = dict(event.payload)
    return {
        "event_id": event.event_id,
        "type": event.type,
        "name": event.payload.get("event") or event.payload.get("name"),
        "path": path[:2000] if path else None,
        "properties": _bounded(event.payload.get("properties") or {}),
        "page_context": page_context,
        "occurred_at": event.effective_at,
        "source": event.source,
        "identities": [list(key) for key in identities],
        "payload": payload,
    }


def as_event(row: Any) -> Envelope:
    """An envelope equivalent, for scoring and for applying again, to the one the row was
    kept from (its time is the time Funnel trusted)."""
    if row.type == "track":
        payload: dict[str, Any] = {"event": row.name, "properties": dict(row.properties)}
    elif row.type in ("page", "screen"):
        payload = {"name": row.name, "properties": dict(row.properties)}
    else:
        payload = dict(row.payload or {})
    named = {kind: value for kind, value in reversed(row.identities or [])}
    context = {"page": dict(row.page_context)} if row.page_context else {}
    return Envelope(
        event_id=row.event_id,
        type=row.type,
        schema_version=1,
        occurred_at=row.occurred_at,
        received_at=row.occurred_at,
        source=row.source or "history",
        payload=payload,
        context=context,
        user_id=named.get(USER_ID),
        anonymous_id=named.get(ANONYMOUS_ID),
    )


@dataclass(frozen=True)
class Rescored:
    awards: list[tuple[Award, datetime]]
    score: int
    engagement_raw: float
    intent: dict[str, int]
    fit_score: int
    fit_grade: str


def score_history(
    model: ScoringModel,
    rows: Iterable[Any],
    traits: Mapping[str, Any],
    account: Mapping[str, Any],
) -> Rescored:
    """Replay ``rows`` (oldest first) under ``model``."""
    history: dict[str, list[datetime]] = {}
    awards: list[tuple[Award, datetime]] = []
    score, raw = 0, 0.0
    for row in rows:
        event = as_event(row)
        for award in model.awards(event, history):
            history.setdefault(award.rule_id, []).append(event.effective_at)
            awards.append((award, event.effective_at))
            score += award.points
            raw += raw_increment(award.points, event.effective_at, model.half_life_days)
    intent = with_intent({}, (award for award, _ in awards))
    fit = grade(traits, account, model.fit_criteria, model.grades)
    return Rescored(awards, score, raw, intent, fit.score, fit.grade)

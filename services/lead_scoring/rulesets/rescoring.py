"""Rescoring leads from their stored history under a scoring model.

Used by the live handler (a lead scored with an older rule set, or two histories merged,
is rescored before its next event) and by the rescore job
(:mod:`services.lead_scoring.jobs.rescore`). Rescoring only moves stages forward (like
any automatic move); it never takes a stage away. Every change is explained: the points of
a rescore are per-rule adjustments that add up to the delta (:func:`explain_change`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from itertools import groupby
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from services.lead_scoring.model.history import score_history
from services.lead_scoring.model.rules import Award
from services.lead_scoring.model.scoring import ScoringModel
from services.lead_scoring.models import Identity, LeadEvent, ScoreEntry
from services.lead_scoring.processing.lead_events import derived_event_id, lead_event, snapshot
from services.lead_scoring.processing.lead_rows import LeadState
from services.lead_scoring.processing.store import LeadStore
from shared.outbox import Outgoing

RuleTotals = dict[str, tuple[int, str]]
"""rule id → (points it gave a lead in all, its reason)."""


def points_by_rule(session: Session, lead_ids: Sequence[str]) -> dict[str, RuleTotals]:
    """Each lead's stored points per rule (one grouped query)."""
    out: dict[str, RuleTotals] = {}
    if not lead_ids:
        return out
    for lead_id, rule_id, points, reason in session.execute(
        select(
            ScoreEntry.lead_id,
            ScoreEntry.rule_id,
            func.sum(ScoreEntry.points),
            func.max(ScoreEntry.reason),
        )
        .where(ScoreEntry.lead_id.in_(lead_ids))
        .group_by(ScoreEntry.lead_id, ScoreEntry.rule_id)
    ):
        out.setdefault(lead_id, {})[rule_id] = (int(points), reason)
    return out


def totals(awards: Sequence[Award]) -> RuleTotals:
    out: RuleTotals = {}
    for award in awards:
        points, _ = out.get(award.rule_id, (0, award.reason))
        out[award.rule_id] = (points + award.points, award.reason)
    return out


def explain_change(
    before: RuleTotals, after: RuleTotals, cause: str, event_id: str
) -> list[dict[str, Any]]:
    """The points of a rescore, per rule: what each rule gives now minus what it gave,
    so ``lead.scored`` points still add up to its delta. ``cause`` says why (a new rule
    set, merged histories); ``event_id`` is what caused it."""
    out = []
    for rule_id in sorted(before.keys() | after.keys()):
        old, old_reason = before.get(rule_id, (0, ""))
        new, reason = after.get(rule_id, (0, old_reason))
        if new != old:
            out.append(
                {
                    "rule_id": rule_id,
                    "points": new - old,
                    "reason": f"{reason}: {old} → {new} points ({cause})",
                    "event_id": event_id,
                }
            )
    return out


def rescore_leads(
    session: Session,
    leads: Sequence[LeadState],
    version: int,
    model: ScoringModel,
    now: datetime,
    *,
    publish: bool = True,
) -> list[Outgoing]:
    """Replace the leads' points with their history scored under ``model``; returns
    one ``lead.scored`` per changed score and any forward stage moves. ``publish=False``
    (the live handler, which moves stages and publishes for the whole event itself) only
    rebuilds the points."""
    if not leads:
        return []
    ids = [lead.id for lead in leads]
    rows = session.scalars(
        select(LeadEvent)
        # Events a split set aside named two people: they count for neither.
        .where(LeadEvent.lead_id.in_(ids), LeadEvent.excluded.is_(None))
        .order_by(LeadEvent.lead_id, LeadEvent.occurred_at, LeadEvent.id)
    ).all()
    by_lead = {lead_id: list(group) for lead_id, group in groupby(rows, key=lambda r: r.lead_id)}
    identities: dict[str, list[tuple[str, str]]] = {}
    if publish:  # one query for the whole chunk, before anything is dirty
        for lead_id, kind, value in session.execute(
            select(Identity.lead_id, Identity.kind, Identity.value)
            .where(Identity.lead_id.in_(ids))
            .order_by(Identity.kind, Identity.value)
        ):
            identities.setdefault(lead_id, []).append((kind, value))
    before = points_by_rule(session, ids) if publish else {}
    session.execute(delete(ScoreEntry).where(ScoreEntry.lead_id.in_(ids)))
    entries: list[dict[str, Any]] = []
    out: list[Outgoing] = []
    store = LeadStore(session)
    for lead in leads:
        result = score_history(model, by_lead.get(lead.id, []), lead.traits, lead.account_traits)
        entries += [
            {
                "lead_id": lead.id,
                "event_id": a.event_id,
                "rule_id": a.rule_id,
                "points": a.points,
                "reason": a.reason,
                "occurred_at": at,
            }
            for a, at in result.awards
        ]
        score_before = lead.score
        lead.score, lead.engagement_raw, lead.intent = (
            result.score,
            result.engagement_raw,
            result.intent,
        )
        lead.fit_score, lead.fit_grade, lead.rules_version = (
            result.fit_score,
            result.fit_grade,
            version,
        )
        if not publish:
            continue
        moves = store.advance(
            lead, mql_threshold=model.mql_threshold, changed_by=f"rescore:v{version}", at=now
        )
        if lead.score == score_before and not moves:
            continue
        cause = f"rescore:{version}:{lead.id}"
        snap = snapshot(store, lead, identities.get(lead.id, []))
        if lead.score != score_before:
            out.append(
                lead_event(
                    "lead.scored",
                    {
                        "lead": snap,
                        "delta": lead.score - score_before,
                        "points": explain_change(
                            before.get(lead.id, {}),
                            totals([award for award, _ in result.awards]),
                            f"rules v{version}",
                            f"rules:v{version}",
                        ),
                    },
                    lead,
                    event_id=derived_event_id(cause, "scored"),
                    occurred_at=now,
                )
            )
        for i, (from_stage, step) in enumerate(moves):
            out.append(
                lead_event(
                    "lead.stage_changed",
                    {
                        "lead": snap,
                        "from_stage": from_stage,
                        "to_stage": step.to_stage,
                        "reason": f"{step.reason} (rules v{version})",
                        "changed_by": f"rescore:v{version}",
                    },
                    lead,
                    event_id=derived_event_id(cause, f"stage:{i}"),
                    occurred_at=now,
                )
            )
    if entries:
        session.execute(insert(ScoreEntry), entries)
    store.flush()
    return out

"""Applying traffic to leads: the consumer's handler of the traffic topic.

Events and a session in, ``lead.*`` events to publish out: no Kafka, no commits (the
runner owns the transaction, idempotency on ``event_id`` and publishing). It writes lead
state through a :class:`.batch.TrafficBatch` (a few reads up front, bulk writes at the
end); applying events one call each gives the same result, which the runner relies on
when it retries a batch one message at a time. Raises ``InvalidEvent`` only for events it
can never process (they are dead-lettered).

Each event, in order (:func:`_apply`): resolve the person (:func:`_resolve`, merging
leads the event links), update the profile (:func:`_update_profile`), bring the points to
one history under the newest rules (:func:`_rescore_if_needed`), score the event, move
the stage, route a new MQL, and describe every change as an event (:func:`_events`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from services.lead_scoring.handoff.assignment import assign_if_unowned
from services.lead_scoring.model.fit import grade
from services.lead_scoring.model.lifecycle import Transition
from services.lead_scoring.model.rules import Award, is_purchase
from services.lead_scoring.model.scoring import ScoringModel
from services.lead_scoring.models import Lead
from services.lead_scoring.processing.batch import TrafficBatch
from services.lead_scoring.processing.identities import IdentityKey, identities_of, normal_email
from services.lead_scoring.processing.lead_events import derived_event_id, lead_event, snapshot
from services.lead_scoring.rulesets.active import RuleSetCache
from services.lead_scoring.rulesets.rescoring import explain_change, points_by_rule, rescore_leads
from shared.db import utcnow
from shared.events import Envelope, InvalidEvent
from shared.limits import capped_traits
from shared.outbox import Outgoing


def handle_traffic_batch(
    events: Sequence[Envelope], session: Session, rule_sets: RuleSetCache
) -> list[Outgoing]:
    """Apply traffic events in order; one ``lead.*`` event per change."""
    if not events:
        return []
    named = [identities_of(event) for event in events]
    if not all(named):
        raise InvalidEvent("event names no person (no user_id, anonymous_id or email)")
    _, model = rule_sets.current(session)
    batch = TrafficBatch(
        session, model.history_scope, since=min(event.effective_at for event in events)
    )
    batch.preload(key for identities in named for key in identities)
    out: list[Outgoing] = []
    for event, identities in zip(events, named, strict=True):
        out.extend(_apply(event, identities, batch, rule_sets))
    batch.flush()
    return out


@dataclass
class _Change:
    """What one event did to its lead, for the events that describe it."""

    lead: Lead
    score_before: int
    merged: list[tuple[str, str]] = field(default_factory=list)  # (merged lead id, reason)
    adjustments: list[dict[str, Any]] = field(default_factory=list)
    awards: list[Award] = field(default_factory=list)
    moves: list[tuple[str, Transition]] = field(default_factory=list)
    assigned: Outgoing | None = None


def _apply(
    event: Envelope, identities: list[IdentityKey], store: TrafficBatch, rule_sets: RuleSetCache
) -> list[Outgoing]:
    version, model = rule_sets.current(store.session)
    store.rescope(model.history_scope)
    change = _resolve(event, identities, store, version)
    _update_profile(change.lead, event)
    version, model = _newest_rules(change.lead, store, rule_sets, version, model)
    change.adjustments = _rescore_if_needed(change, event, store, version, model)
    if not change.adjustments and event.type in ("identify", "group"):
        lead = change.lead
        fit = grade(lead.traits, lead.account_traits, model.fit_criteria, model.grades)
        lead.fit_score, lead.fit_grade = fit.score, fit.grade
    _score(change, event, store, model)
    return _events(change, event, store)


def _resolve(
    event: Envelope, identities: list[IdentityKey], store: TrafficBatch, version: int
) -> _Change:
    """The lead the event belongs to: the oldest of the leads its identifiers point at
    (the others are merged into it), or a new one. The identifiers are then its."""
    leads = store.leads_for(identities)
    lead = leads[0] if leads else store.create_lead(event.effective_at, version)
    change = _Change(lead=lead, score_before=lead.score)
    for other in leads[1:]:
        reason = f"{event.type} linked {', '.join(f'{k}={v}' for k, v in identities)}"
        change.score_before += other.score
        store.merge(lead, other, reason)
        change.merged.append((other.id, reason))
    store.attach(lead, identities)
    return change


def _update_profile(lead: Lead, event: Envelope) -> None:
    """What an event says about the person: their user id, traits and e-mail (identify),
    their account (group). Traits stay within their cap."""
    if event.user_id and not lead.user_id:
        lead.user_id = event.user_id
    if event.type == "identify":
        traits = dict(event.payload.get("traits", {}))
        lead.traits = capped_traits(lead.traits, traits)
        lead.email = normal_email(traits.get("email")) or lead.email
    elif event.type == "group":
        lead.account_id = event.payload["group_id"]
        lead.account_traits = capped_traits(lead.account_traits, event.payload.get("traits", {}))


def _newest_rules(
    lead: Lead, store: TrafficBatch, rule_sets: RuleSetCache, version: int, model: ScoringModel
) -> tuple[int, ScoringModel]:
    """The rules to score with: if this lead was scored with a newer version than our
    cache holds (the rescore job or another process saw it first), read them again.
    Versions only ever move forward."""
    if lead.rules_version <= version:
        return version, model
    rule_sets.invalidate()
    version, model = rule_sets.current(store.session)
    store.rescope(model.history_scope)
    return version, model


def _rescore_if_needed(
    change: _Change, event: Envelope, store: TrafficBatch, version: int, model: ScoringModel
) -> list[dict[str, Any]]:
    """One history under one rule set: a merge joins two histories (one-time awards must
    count once), a new rule set changes what each event is worth. Returns the per-rule
    adjustments that explain the change (empty when nothing was rescored)."""
    lead = change.lead
    if not change.merged and lead.rules_version >= version:
        return []
    session = store.session
    store.flush()
    before = points_by_rule(session, [lead.id]).get(lead.id, {})
    rescore_leads(session, [lead], version, model, utcnow(), publish=False)
    store.forget(lead.id)
    return explain_change(
        before,
        points_by_rule(session, [lead.id]).get(lead.id, {}),
        "histories merged" if change.merged else f"rules v{version}",
        event.event_id,
    )


def _score(change: _Change, event: Envelope, store: TrafficBatch, model: ScoringModel) -> None:
    """Keep the event, award its points, move the stage forward as far as the facts go,
    and route the lead if it just became an MQL without an owner."""
    lead = change.lead
    store.add_event(lead, event)
    change.awards = model.awards(event, store.award_history(lead.id))
    store.add_awards(lead, change.awards, event.effective_at, model.half_life_days)
    change.moves = store.advance(
        lead,
        mql_threshold=model.mql_threshold,
        changed_by="system",
        purchased=is_purchase(event),
        earned_points=sum(a.points for a in change.awards),
    )
    lead.updated_at = event.received_at
    if lead.stage == "mql":
        change.assigned = assign_if_unowned(
            store.session, store, lead, cause_id=event.event_id, now=utcnow()
        )


def _events(change: _Change, event: Envelope, store: TrafficBatch) -> list[Outgoing]:
    """One ``lead.*`` event per change, with ids derived from the cause (a redelivered
    event yields the same ids, which consumers skip)."""
    lead = change.lead

    def out(kind: str, event_type: str, payload: dict[str, Any]) -> Outgoing:
        return lead_event(
            event_type,
            payload,
            lead,
            event_id=derived_event_id(event.event_id, kind),
            occurred_at=event.effective_at,
        )

    snap = snapshot(store, lead)
    events = [
        out(
            f"merged:{merged_id}",
            "lead.merged",
            {"lead": snap, "merged_lead_id": merged_id, "reason": reason},
        )
        for merged_id, reason in change.merged
    ]
    if lead.score != change.score_before or change.awards:
        points = change.adjustments + [
            {"rule_id": a.rule_id, "points": a.points, "reason": a.reason, "event_id": a.event_id}
            for a in change.awards
        ]
        events.append(
            out(
                "scored",
                "lead.scored",
                {"lead": snap, "delta": lead.score - change.score_before, "points": points},
            )
        )
    for i, (from_stage, step) in enumerate(change.moves):
        events.append(
            out(
                f"stage:{i}",
                "lead.stage_changed",
                {
                    "lead": snap,
                    "from_stage": from_stage,
                    "to_stage": step.to_stage,
                    "reason": step.reason,
                    "changed_by": "system",
                },
            )
        )
    if change.assigned is not None:  # after the stage change that caused it
        events.append(change.assigned)
    return events

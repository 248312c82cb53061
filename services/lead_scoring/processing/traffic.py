"""Applying traffic to leads: the consumer's handler of the traffic topic.

Events and a session in, ``lead.*`` events to publish out: no Kafka, no commits (the
runner owns the transaction, idempotency on ``event_id`` and publishing). It writes lead
state through a :class:`.batch.TrafficBatch` (a few reads up front, bulk writes at the
end); applying events one call each gives the same result, which the runner relies on
when it retries a batch one message at a time. Raises ``InvalidEvent`` only for events it
can never process (they are dead-lettered).

Each event, in order (:func:`apply_event`): resolve the person under the identity rules
(:func:`_resolve`: merging leads the event links where the rules allow, recording
conflicts where they do not), update the profile (:func:`_update_profile`), bring the points to
one history under the newest rules (:func:`_rescore_if_needed`), score the event, move
the stage, route a new MQL, and describe every change as an event (:func:`_events`);
consent decisions are kept per person (:mod:`.consent`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from services.lead_scoring.handoff.assignment import assign_if_unowned
from services.lead_scoring.model.fit import grade
from services.lead_scoring.model.identity import IdentityRules, resolve
from services.lead_scoring.model.lifecycle import Transition
from services.lead_scoring.model.rules import Award, is_purchase
from services.lead_scoring.model.scoring import ScoringModel
from services.lead_scoring.processing.batch import TrafficBatch
from services.lead_scoring.processing.consent import record_consent
from services.lead_scoring.processing.identities import (
    IdentityKey,
    event_keys,
    lookup_keys,
    normal_email,
)
from services.lead_scoring.processing.lead_events import (
    coalesce_scored,
    derived_event_id,
    lead_event,
    snapshot,
)
from services.lead_scoring.processing.lead_rows import LeadState
from services.lead_scoring.rulesets.active import IdentityRulesCache, RuleSetCache
from services.lead_scoring.rulesets.rescoring import explain_change, points_by_rule, rescore_leads
from shared.db import utcnow
from shared.events import Envelope, InvalidEvent
from shared.identity import EMAIL, USER_ID
from shared.limits import capped_traits
from shared.outbox import Outgoing
from shared.provenance import from_browser, source_kind


@dataclass
class Rules:
    """The newest scoring and identity rules, as this process sees them."""

    scoring: RuleSetCache
    identity: IdentityRulesCache


def handle_traffic_batch(
    events: Sequence[Envelope], session: Session, rules: Rules
) -> list[Outgoing]:
    """Apply traffic events in order; one ``lead.*`` event per change, except that a
    lead's ``lead.scored`` events are coalesced into one per batch (every point kept,
    :func:`.lead_events.coalesce_scored`): publishing costs more here than consuming,
    so a busy lead costs one event per batch, not one per page view."""
    if not events:
        return []
    _, identity_rules = rules.identity.current(session)
    named = [lookup_keys(event, identity_rules) for event in events]
    if not all(named):
        raise InvalidEvent("event names no person (no usable user_id or anonymous_id)")
    _, model = rules.scoring.current(session)
    batch = TrafficBatch(
        session, model.history_scope, since=min(event.effective_at for event in events)
    )
    batch.preload(key for identities in named for key in identities)
    out: list[Outgoing] = []
    for event in events:
        out.extend(apply_event(event, batch, rules.scoring, identity_rules))
    batch.flush()
    return coalesce_scored(out)


@dataclass
class _Change:
    """What one event did to its lead, for the events that describe it."""

    lead: LeadState
    score_before: int
    keys: list[IdentityKey] = field(default_factory=list)  # what the event named
    merged: list[tuple[str, str]] = field(default_factory=list)  # (merged lead id, reason)
    adjustments: list[dict[str, Any]] = field(default_factory=list)
    awards: list[Award] = field(default_factory=list)
    moves: list[tuple[str, Transition]] = field(default_factory=list)
    assigned: Outgoing | None = None


def apply_event(
    event: Envelope,
    store: TrafficBatch,
    rule_sets: RuleSetCache,
    identity_rules: IdentityRules,
    *,
    to: LeadState | None = None,
) -> list[Outgoing]:
    """Apply one event (see the module docstring); returns the events describing it.
    ``to`` applies it to that lead without resolving identities (a split rebuilding a
    lead whose identifiers are already its own)."""
    version, model = rule_sets.current(store.session)
    store.rescope(model.history_scope)
    keys = event_keys(event, identity_rules, lambda key: store.owners([key])[key] is not None)
    if to is None:
        change = _resolve(event, keys, store, version, identity_rules)
    else:
        change = _Change(lead=to, score_before=to.score, keys=keys)
    _update_profile(change.lead, event, set(store.holdings([change.lead.id])[change.lead.id]))
    consent = record_consent(event, change.lead, store)
    version, model = _newest_rules(change.lead, store, rule_sets, version, model)
    change.adjustments = _rescore_if_needed(change, event, store, version, model)
    if not change.adjustments and event.type in ("identify", "group"):
        lead = change.lead
        fit = grade(lead.traits, lead.account_traits, model.fit_criteria, model.grades)
        lead.fit_score, lead.fit_grade = fit.score, fit.grade
    _score(change, event, store, model)
    return _events(change, event, store) + consent


def _resolve(
    event: Envelope,
    keys: list[IdentityKey],
    store: TrafficBatch,
    version: int,
    rules: IdentityRules,
) -> _Change:
    """The lead the event belongs to under the identity rules (see
    :func:`..model.identity.resolve`): merges what may be merged, moves identifiers that
    follow the latest person, records every conflict, attaches the new identifiers."""
    owners = store.owners(keys)
    candidates = {lead_id for lead_id in owners.values() if lead_id is not None}
    browser = from_browser(event.context)
    decision = resolve(
        keys, owners, store.holdings(candidates), rules, event.source, browser=browser
    )
    if decision.target is not None:
        lead = store.lead(decision.target)
    else:
        lead = store.create_lead(event.effective_at, version)
    change = _Change(lead=lead, score_before=lead.score, keys=keys)
    for other_id, via in decision.merges:
        other = store.lead(other_id)
        kind = source_kind(event.context)
        reason = f"{event.type} from {event.source} ({kind} source) linked {via[0]}={via[1]}"
        change.score_before += other.score
        store.merge(lead, other, reason, event=event)
        change.merged.append((other_id, reason))
    for key, _from in decision.moves:
        store.move_identity(key, lead)
    for conflict in decision.conflicts:
        store.add_conflict(lead, conflict, event)
    store.attach(lead, decision.attach, event)
    return change


def _update_profile(lead: LeadState, event: Envelope, held: set[IdentityKey]) -> None:
    """What an event says about the person: their user id, traits and e-mail (identify),
    their account (group). Identity fields the lead does not hold (another person keeps
    them, see the recorded conflict) are never written onto it. Traits stay within their
    cap. A browser source only fills in what the lead does not have yet (its e-mail,
    traits): it never overwrites what a server source said."""
    browser = from_browser(event.context)
    if event.user_id and not lead.user_id and (USER_ID, event.user_id) in held:
        lead.user_id = event.user_id
    if event.type == "identify":
        traits = dict(event.payload.get("traits", {}))
        email = normal_email(traits.get("email"))
        if email is not None and (EMAIL, email) not in held:
            traits.pop("email", None)
            email = None
        if browser:
            traits = {k: v for k, v in traits.items() if k not in lead.traits}
        lead.traits = capped_traits(lead.traits, traits)
        lead.email = (lead.email or email) if browser else (email or lead.email)
    elif event.type == "group":
        lead.account_id = event.payload["group_id"]
        given = dict(event.payload.get("traits", {}))
        if browser:
            given = {k: v for k, v in given.items() if k not in lead.account_traits}
        lead.account_traits = capped_traits(lead.account_traits, given)


def _newest_rules(
    lead: LeadState, store: TrafficBatch, rule_sets: RuleSetCache, version: int, model: ScoringModel
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
    store.add_event(lead, event, change.keys)
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

"""Pure event handlers of lead-scoring: an event and a session in, events to publish out.

No Kafka, no commits: the shared runner owns the transaction, idempotency on
``event_id`` and publishing. A handler raises ``InvalidEvent`` only for events it can
never process (they go to the dead-letter topic).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from services.lead_scoring.config import ScoringConfig
from services.lead_scoring.engagement import DEFAULT_HALF_LIFE_DAYS
from services.lead_scoring.fit import DEFAULT_CRITERIA, FitCriterion, grade
from services.lead_scoring.handoff import assign_if_unowned
from services.lead_scoring.intent import DEFAULT_TAXONOMY, Topic, intent_rules, topics_of
from services.lead_scoring.lifecycle import automatic_transition
from services.lead_scoring.models import Lead
from services.lead_scoring.publishing import derived_event_id, lead_event, snapshot
from services.lead_scoring.scoring import (
    DEFAULT_RULES,
    Award,
    Rule,
    evaluate,
    is_purchase,
    page_path,
)
from services.lead_scoring.store import IdentityKey, LeadStore
from shared.db import utcnow
from shared.events import Envelope, InvalidEvent
from shared.outbox import Outgoing


@dataclass(frozen=True)
class ScoringSettings:
    """Everything that decides a score; data, so it can come from configuration."""

    rules: tuple[Rule, ...] = DEFAULT_RULES
    mql_threshold: int = 50
    fit_criteria: tuple[FitCriterion, ...] = DEFAULT_CRITERIA
    taxonomy: tuple[Topic, ...] = DEFAULT_TAXONOMY
    half_life_days: float = DEFAULT_HALF_LIFE_DAYS

    @classmethod
    def from_config(cls, config: ScoringConfig) -> ScoringSettings:
        return cls(mql_threshold=config.mql_threshold, half_life_days=config.half_life_days)

    @property
    def one_time_rules(self) -> list[str]:
        return [r.id for r in self.rules if not r.repeatable]

    def awards(self, event: Envelope, history: dict[str, list[datetime]]) -> list[Award]:
        """Behaviour awards plus intent awards (per topic, capped per day)."""
        awards = evaluate(self.rules, event, history)
        topic_rules = intent_rules(self.taxonomy)
        for topic in topics_of(event, self.taxonomy):
            rule = topic_rules[f"intent:{topic.id}"]
            if rule.allows(event, history.get(rule.id, ())):
                awards.append(Award(rule.id, rule.points, rule.description, event.event_id))
        return awards


def _email(value: Any) -> str | None:
    if isinstance(value, str) and "@" in value.strip():
        return value.strip().lower()
    return None


def identities_of(event: Envelope) -> list[IdentityKey]:
    """Every identifier the event names, most specific first."""
    keys: list[IdentityKey] = []
    if event.user_id:
        keys.append(("user_id", event.user_id))
    if event.anonymous_id:
        keys.append(("anonymous_id", event.anonymous_id))
    if event.type == "identify":
        email = _email(event.payload.get("traits", {}).get("email"))
        if email:
            keys.append(("email", email))
    if event.type == "alias":
        previous = event.payload["previous_id"]
        keys.extend([("user_id", previous), ("anonymous_id", previous)])
    return keys


def _lead_event(
    event: Envelope, kind: str, event_type: str, payload: dict[str, Any], lead: Lead
) -> Outgoing:
    return lead_event(
        event_type,
        payload,
        lead,
        event_id=derived_event_id(event.event_id, kind),
        occurred_at=event.occurred_at,
    )


def handle_traffic(event: Envelope, session: Session, settings: ScoringSettings) -> list[Outgoing]:
    """Apply one traffic event: resolve (and merge) the lead, update the profile, score,
    move the stage, and return one ``lead.*`` event per change."""
    identities = identities_of(event)
    if not identities:
        raise InvalidEvent("event names no person (no user_id, anonymous_id or email)")
    store = LeadStore(session)
    leads = store.leads_for(identities)
    lead = leads[0] if leads else store.create_lead(event.occurred_at)
    score_before = lead.score
    out: list[Outgoing] = []

    merged_ids = []
    for other in leads[1:]:
        reason = f"{event.type} linked {', '.join(f'{k}={v}' for k, v in identities)}"
        score_before += other.score
        store.merge(lead, other, reason)
        merged_ids.append((other.id, reason))
    if merged_ids:
        store.drop_duplicate_one_time_awards(lead.id, settings.one_time_rules)
        store.recompute_totals(lead, settings.half_life_days)
    store.attach(lead, identities)

    if event.user_id and not lead.user_id:
        lead.user_id = event.user_id
    if event.type == "identify":
        traits = dict(event.payload.get("traits", {}))
        lead.traits = {**lead.traits, **traits}
        lead.email = _email(traits.get("email")) or lead.email
    elif event.type == "group":
        lead.account_id = event.payload["group_id"]
        lead.account_traits = {**lead.account_traits, **event.payload.get("traits", {})}

    store.add_event(
        lead,
        event_id=event.event_id,
        type_=event.type,
        name=event.payload.get("event") or event.payload.get("name"),
        path=page_path(event) if event.type in ("page", "screen") else None,
        occurred_at=event.occurred_at,
    )
    if event.type in ("identify", "group") or merged_ids:
        fit = grade(lead.traits, lead.account_traits, settings.fit_criteria)
        lead.fit_score, lead.fit_grade = fit.score, fit.grade
    awards = settings.awards(event, store.award_history(lead.id))
    store.add_awards(lead, awards, event.occurred_at, settings.half_life_days)

    transition = automatic_transition(
        lead.stage,
        known=lead.email is not None,
        score=lead.score,
        mql_threshold=settings.mql_threshold,
        purchased=is_purchase(event),
        earned_points=sum(a.points for a in awards),
    )
    # A second pass lets one event move subscriber → lead → MQL (identify with a form).
    steps = []
    while transition is not None:
        steps.append((lead.stage, transition))
        store.change_stage(lead, transition.to_stage, transition.reason, "system")
        transition = automatic_transition(
            lead.stage,
            known=lead.email is not None,
            score=lead.score,
            mql_threshold=settings.mql_threshold,
            purchased=False,
        )
    lead.updated_at = event.received_at
    session.flush()
    assigned = None
    if lead.stage == "mql":
        assigned = assign_if_unowned(session, store, lead, cause_id=event.event_id, now=utcnow())

    snap = snapshot(store, lead)
    for merged_id, reason in merged_ids:
        out.append(
            _lead_event(
                event,
                f"merged:{merged_id}",
                "lead.merged",
                {"lead": snap, "merged_lead_id": merged_id, "reason": reason},
                lead,
            )
        )
    if lead.score != score_before or awards:
        points = [
            {"rule_id": a.rule_id, "points": a.points, "reason": a.reason, "event_id": a.event_id}
            for a in awards
        ]
        out.append(
            _lead_event(
                event,
                "scored",
                "lead.scored",
                {"lead": snap, "delta": lead.score - score_before, "points": points},
                lead,
            )
        )
    for i, (from_stage, step) in enumerate(steps):
        out.append(
            _lead_event(
                event,
                f"stage:{i}",
                "lead.stage_changed",
                {
                    "lead": snap,
                    "from_stage": from_stage,
                    "to_stage": step.to_stage,
                    "reason": step.reason,
                    "changed_by": "system",
                },
                lead,
            )
        )
    if assigned is not None:  # after the stage change that caused it
        out.append(assigned)
    return out

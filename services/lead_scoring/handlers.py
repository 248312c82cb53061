"""Pure event handlers of lead-scoring: events and a session in, events to publish out.

No Kafka, no commits: the shared runner owns the transaction, idempotency on
``event_id`` and publishing. A handler raises ``InvalidEvent`` only for events it can
never process (they go to the dead-letter topic). A batch is applied through one
:class:`TrafficBatch` (a few reads up front, bulk writes at the end); applying events one
call each gives the same result, which the runner relies on when it retries a batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from services.lead_scoring.fit import grade
from services.lead_scoring.handoff import assign_if_unowned
from services.lead_scoring.models import Lead
from services.lead_scoring.publishing import derived_event_id, lead_event, snapshot
from services.lead_scoring.rulesets import (
    ActiveSettings,
    explain_change,
    points_by_rule,
    rescore_leads,
)
from services.lead_scoring.scoring import (
    is_purchase,
)
from services.lead_scoring.store import IdentityKey, TrafficBatch
from shared.db import utcnow
from shared.events import Envelope, InvalidEvent
from shared.identity import is_junk_id
from shared.limits import MAX_EMAIL_LENGTH, capped_traits, clean_text
from shared.outbox import Outgoing


def _email(value: Any) -> str | None:
    if isinstance(value, str) and "@" in value and len(value.strip()) <= MAX_EMAIL_LENGTH:
        return clean_text(value.strip().lower())
    return None


def identities_of(event: Envelope) -> list[IdentityKey]:
    """Every usable identifier the event names, most specific first. Junk ids ("null",
    "undefined", "0" …) are dropped here too, not only at intake: a replayed or foreign
    event must never merge strangers."""
    return [(kind, value) for kind, value in _named_identities(event) if not is_junk_id(value)]


def _named_identities(event: Envelope) -> list[IdentityKey]:
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
        occurred_at=event.effective_at,
    )


def handle_traffic_batch(
    events: Sequence[Envelope], session: Session, active: ActiveSettings
) -> list[Outgoing]:
    """Apply traffic events in order: per event, resolve (and merge) the lead, update the
    profile, score, move the stage, and return one ``lead.*`` event per change."""
    if not events:
        return []
    named = [identities_of(event) for event in events]
    if not all(named):
        raise InvalidEvent("event names no person (no user_id, anonymous_id or email)")
    _, settings = active.current(session)
    batch = TrafficBatch(
        session, settings.history_scope, since=min(event.effective_at for event in events)
    )
    batch.preload(key for identities in named for key in identities)
    out: list[Outgoing] = []
    for event, identities in zip(events, named, strict=True):
        out.extend(_apply(event, identities, batch, active))
    batch.flush()
    return out


def _apply(
    event: Envelope, identities: list[IdentityKey], store: TrafficBatch, active: ActiveSettings
) -> list[Outgoing]:
    session = store.session
    version, settings = active.current(session)
    store.rescope(settings.history_scope)
    leads = store.leads_for(identities)
    lead = leads[0] if leads else store.create_lead(event.effective_at, version)
    score_before = lead.score
    out: list[Outgoing] = []

    merged_ids = []
    for other in leads[1:]:
        reason = f"{event.type} linked {', '.join(f'{k}={v}' for k, v in identities)}"
        score_before += other.score
        store.merge(lead, other, reason)
        merged_ids.append((other.id, reason))
    store.attach(lead, identities)

    if event.user_id and not lead.user_id:
        lead.user_id = event.user_id
    if event.type == "identify":
        traits = dict(event.payload.get("traits", {}))
        lead.traits = capped_traits(lead.traits, traits)
        lead.email = _email(traits.get("email")) or lead.email
    elif event.type == "group":
        lead.account_id = event.payload["group_id"]
        lead.account_traits = capped_traits(lead.account_traits, event.payload.get("traits", {}))

    if lead.rules_version > version:
        # Our cached rule set is older than the one this lead was scored with (the rescore
        # job or another process saw a newer version first): read it again. Versions only
        # ever move forward.
        active.invalidate()
        version, settings = active.current(session)
        store.rescope(settings.history_scope)
    adjustments: list[dict[str, Any]] = []
    if merged_ids or lead.rules_version < version:
        # One history under one rule set: a merge joins two histories (one-time awards
        # must count once), a new rule set changes what each event is worth.
        store.flush()
        before = points_by_rule(session, [lead.id]).get(lead.id, {})
        rescore_leads(session, [lead], version, settings, utcnow(), publish=False)
        store.forget(lead.id)
        adjustments = explain_change(
            before,
            points_by_rule(session, [lead.id]).get(lead.id, {}),
            "histories merged" if merged_ids else f"rules v{version}",
            event.event_id,
        )
    elif event.type in ("identify", "group"):
        fit = grade(lead.traits, lead.account_traits, settings.fit_criteria, settings.grades)
        lead.fit_score, lead.fit_grade = fit.score, fit.grade
    store.add_event(lead, event)
    awards = settings.awards(event, store.award_history(lead.id))
    store.add_awards(lead, awards, event.effective_at, settings.half_life_days)

    steps = store.advance(
        lead,
        mql_threshold=settings.mql_threshold,
        changed_by="system",
        purchased=is_purchase(event),
        earned_points=sum(a.points for a in awards),
    )
    lead.updated_at = event.received_at
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
        points = adjustments + [
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

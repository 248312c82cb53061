"""What lead-scoring tells the rest of the funnel: lead snapshots and ``lead.*`` events.

Shared by the event handler, the sales API and the SLA timer so every lead event carries
the same snapshot.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from services.lead_scoring.models import outbox
from services.lead_scoring.processing.lead_rows import LeadState
from services.lead_scoring.processing.store import LeadStore
from shared.deadletter import DeadLetter
from shared.events import derived_id, new_event
from shared.identity import ANONYMOUS_ID
from shared.outbox import Outgoing, dead_letter_row
from shared.topics import LEAD_SCORING, LEADS


def snapshot(
    store: LeadStore, lead: LeadState, identities: list[tuple[str, str]] | None = None
) -> dict[str, Any]:
    """The lead as events describe it, as a new version; pass ``identities`` when already
    loaded. Call it after the change it describes, with the lead locked (every writer
    holds the lead's row lock), so versions follow the order of changes."""
    if identities is None:
        identities = store.identities_of(lead.id)
    lead.version = (lead.version or 0) + 1
    return {
        "version": lead.version,
        "lead_id": lead.id,
        "stage": lead.stage,
        "score": lead.score,
        "email": lead.email,
        "user_id": lead.user_id,
        "anonymous_ids": [v for k, v in identities if k == ANONYMOUS_ID],
        "traits": dict(lead.traits),
        "intent": dict(lead.intent or {}),
        "owner_id": lead.owner_id,
    }


def derived_event_id(cause_id: str, kind: str) -> str:
    """Deterministic: reprocessing the same cause yields the same id, which consumers
    then deduplicate."""
    return derived_id(f"funnel:{cause_id}:{kind}")


def lead_event(
    event_type: str,
    payload: dict[str, Any],
    lead: LeadState,
    *,
    event_id: str,
    occurred_at: datetime,
) -> Outgoing:
    anonymous = payload["lead"]["anonymous_ids"]
    envelope = new_event(
        event_type,
        payload,
        source=LEAD_SCORING,
        event_id=event_id,
        occurred_at=occurred_at,
        user_id=lead.user_id,
        anonymous_id=anonymous[0] if anonymous else None,
    )
    return Outgoing(LEADS, lead.id, envelope)


# At most this many points, and about this many bytes of them, in one coalesced
# ``lead.scored``: a batch of one busy lead becomes several events rather than one past
# the producer's and broker's 1 MB message limit (a point can be 1.4 KB encoded).
MAX_COALESCED_POINTS = 1_000
MAX_COALESCED_BYTES = 256_000


def coalesce_scored(out: Sequence[Outgoing]) -> list[Outgoing]:
    """One ``lead.scored`` per lead for a batch's events, not one per event: each lead's
    scored events become one (or, past ``MAX_COALESCED_POINTS`` or ``MAX_COALESCED_BYTES``,
    a few), carrying every
    point in order, the sum of their deltas and the newest snapshot, at the place of the
    last one it replaces. Coalescing, not dropping: a consumer ends in the same state and
    sees every explanation. Other events are kept as they are, in order. The id is derived
    from the ids replaced, so the same batch always gives the same event."""
    positions: dict[str, list[int]] = {}
    for i, item in enumerate(out):
        if item.envelope.type == "lead.scored":
            positions.setdefault(item.key, []).append(i)
    replaced: dict[int, Outgoing | None] = {}
    for places in positions.values():
        if len(places) < 2:
            continue
        group: list[int] = []
        count = size = 0
        for i in places:
            points = out[i].envelope.payload["points"]
            weight = len(json.dumps(points))
            if group and (
                count + len(points) > MAX_COALESCED_POINTS or size + weight > MAX_COALESCED_BYTES
            ):
                _coalesce_group(out, group, replaced)
                group, count, size = [], 0, 0
            group.append(i)
            count += len(points)
            size += weight
        _coalesce_group(out, group, replaced)
    kept = (replaced.get(i, item) for i, item in enumerate(out))
    return [item for item in kept if item is not None]


def _coalesce_group(
    out: Sequence[Outgoing], group: list[int], replaced: dict[int, Outgoing | None]
) -> None:
    if len(group) < 2:
        return
    envelopes = [out[i].envelope for i in group]
    last = envelopes[-1]
    payload = {
        "lead": last.payload["lead"],
        "delta": sum(e.payload["delta"] for e in envelopes),
        "points": [p for e in envelopes for p in e.payload["points"]],
    }
    event_id = derived_event_id(",".join(e.event_id for e in envelopes), "scored")
    for i in group[:-1]:
        replaced[i] = None
    replaced[group[-1]] = Outgoing(
        out[group[-1]].topic,
        out[group[-1]].key,
        dataclasses.replace(last, payload=payload, event_id=event_id),
    )


def enqueue_dead_letter(session: Session, letter: DeadLetter) -> None:
    """Queue a dead letter through lead-scoring's outbox, in the caller's transaction."""
    session.execute(insert(outbox), [dead_letter_row(letter, f"dlq-{uuid.uuid4().hex}")])

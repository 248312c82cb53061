"""traffic-intake's part in privacy: the door and the privacy consumer.

At the door (:func:`as_stored` and :func:`erased_at_the_door`, used by the group
commit that stores accepted events): an erased person's new events are dropped
(answered as accepted, so the door tells nothing about who was erased; counted as
dropped), and an event whose sender denied analytics is kept for delivery stripped of its
personal fields (:func:`shared.privacy.strip_personal`).

The privacy consumer (``python -m services.traffic_intake consume``, a process of its own)
answers requests on the privacy topic: an erasure remembers the person's identifiers by
hash (so the door drops them from now on) and deletes every accepted event (``outbox``,
sent or not) and every failed event that mentions them; an access request returns those
events. Both answer on the privacy topic through ``privacy_outbox`` — its own relay,
since the traffic relay owns ``outbox``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from sqlalchemy import delete
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from services.traffic_intake.models import (
    audit_log,
    erased_people,
    failed_events,
    outbox,
    privacy_outbox,
)
from shared.audit import scrub
from shared.events import Envelope, InvalidEvent, decode
from shared.outbox import Outgoing
from shared.privacy import (
    MAX_ACCESS_ITEMS,
    access_part,
    analytics_denied,
    erased_keys,
    erasure_completed,
    remember_erased,
    requested_identifiers,
    rows_mentioning,
    strip_personal,
)
from shared.topics import TRAFFIC_INTAKE

log = logging.getLogger(__name__)


def as_stored(event: Envelope) -> Envelope:
    """The event as the door stores it: stripped of personal fields when its sender
    denied analytics."""
    return strip_personal(event) if analytics_denied(event) else event


def erased_at_the_door(conn: Connection, wanted: set[str]) -> set[str]:
    """Which of ``wanted`` (:func:`shared.privacy.erasure_keys`) belong to erased people:
    one lookup for a whole group of requests, made inside the transaction that stores
    what is kept."""
    return erased_keys(conn, erased_people, wanted)


def handle_privacy(event: Envelope, session: Session) -> list[Outgoing]:
    if event.type == "privacy.erasure_requested":
        return [erase(session, event)]
    if event.type == "privacy.access_requested":
        return [export(session, event)]
    return []  # consent changes and other services' answers are not intake's business


def erase(session: Session, event: Envelope) -> Outgoing:
    request_id = event.payload["request_id"]
    identifiers = requested_identifiers(event)
    remembered = remember_erased(session, erased_people, identifiers, request_id)
    counts = {"erased_identifiers": remembered}
    for name, table, column in (
        ("outbox", outbox, "value"),
        ("failed_events", failed_events, "body"),
        # Sent answers: an access export of this person is person data too.
        ("privacy_outbox", privacy_outbox, "value"),
    ):
        ids = [row.id for row in rows_mentioning(session, table, column, identifiers)]
        for start in range(0, len(ids), 500):
            session.execute(delete(table).where(table.c.id.in_(ids[start : start + 500])))
        counts[name] = len(ids)
    counts["audit_entries"] = scrub(session, audit_log, [i.value for i in identifiers])
    return erasure_completed(request_id, TRAFFIC_INTAKE, counts)


def export(session: Session, event: Envelope) -> Outgoing:
    identifiers = requested_identifiers(event)
    truncated = []
    accepted = rows_mentioning(session, outbox, "value", identifiers)
    if len(accepted) > MAX_ACCESS_ITEMS:
        truncated.append("accepted_events")
    rejected = rows_mentioning(session, failed_events, "body", identifiers)
    if len(rejected) > MAX_ACCESS_ITEMS:
        truncated.append("failed_events")
    data: dict[str, Any] = {
        "accepted_events": [
            _event(row) for row in sorted(accepted, key=lambda r: r.id)[-MAX_ACCESS_ITEMS:]
        ],
        "failed_events": [
            {
                "received_at": row.received_at,
                "source": row.source,
                "reason": row.reason,
                "body": _json(row.body),
            }
            for row in sorted(rejected, key=lambda r: r.id)[-MAX_ACCESS_ITEMS:]
        ],
    }
    return access_part(event.payload["request_id"], TRAFFIC_INTAKE, data, truncated)


def _event(row: Any) -> dict[str, Any]:
    """An outbox row: an accepted event, or a rejected one on its way to the dead-letter
    topic (its raw body)."""
    try:
        envelope = decode(bytes(row.value))
    except InvalidEvent:
        return {"topic": row.topic, "raw": _json(row.value)}
    return {
        "event_id": envelope.event_id,
        "type": envelope.type,
        "occurred_at": envelope.occurred_at,
        "user_id": envelope.user_id,
        "anonymous_id": envelope.anonymous_id,
        "payload": envelope.payload,
        "context": envelope.context,
    }


def _json(raw: bytes) -> Any:
    try:
        return json.loads(bytes(raw))
    except ValueError:
        return bytes(raw).decode("utf-8", "replace")

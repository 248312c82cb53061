"""Pure mapping from a validated Segment call to a Funnel event envelope.

Enrichment done here: ``receivedAt``; ``context.traffic_source`` (the channel, see
:mod:`channels`); ``occurred_at`` corrected for client clock skew
(``receivedAt - (sentAt - originalTimestamp)``, as Segment does) when the client sent
``originalTimestamp``, else the client's ``timestamp``, else ``receivedAt``; the client IP
in ``context.ip`` when the client did not set one.

Event ids: a client's ``messageId`` is only unique within what that client sends, so the
event id is ``<source tag>:<messageId>`` (:func:`event_id`): deduplication is per source,
and one source can never suppress another's events. A call without a usable messageId
(none, or a junk value such as "undefined" that a broken SDK repeats) gets a fresh id.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from typing import Any

from services.traffic_intake.channels import classify
from shared.events import Envelope, new_event
from shared.identity import is_junk_id
from shared.limits import timestamp_problem
from shared.provenance import SERVER, stamp


def occurred_at(
    call: dict[str, Any], received_at: datetime, batch_sent_at: datetime | None
) -> datetime:
    """When the client says the event happened. The skew correction is skipped when it
    would leave the range of real event times (a wildly wrong ``sentAt``): then the
    client's ``originalTimestamp`` stands as sent."""
    sent_at = call.get("sentAt") or batch_sent_at
    original = call.get("originalTimestamp")
    if original is not None and sent_at is not None:
        try:
            corrected = received_at - (sent_at - original)
        except OverflowError:
            return original
        return original if timestamp_problem(corrected) else corrected
    return call.get("timestamp") or original or received_at


def source_tag(source: str) -> str:
    """A short, stable tag of a source name, for event ids."""
    return hashlib.sha256(source.encode()).hexdigest()[:12]


def event_id(source: str, message_id: str | None) -> str:
    if message_id is None or is_junk_id(message_id):
        return f"srv-{uuid.uuid4().hex}"
    return f"{source_tag(source)}:{message_id}"


def _payload(call_type: str, call: dict[str, Any]) -> dict[str, Any]:
    if call_type == "track":
        return {"event": call["event"], "properties": call["properties"]}
    if call_type in ("page", "screen"):
        return {
            "name": call["name"],
            "category": call["category"],
            "properties": call["properties"],
        }
    if call_type == "identify":
        return {"traits": call["traits"]}
    if call_type == "group":
        return {"group_id": call["groupId"], "traits": call["traits"]}
    if call_type == "alias":
        return {"previous_id": call["previousId"]}
    raise ValueError(f"unknown call type {call_type!r}")


def to_envelope(
    call_type: str,
    call: dict[str, Any],
    *,
    source: str,
    received_at: datetime,
    client_ip: str | None,
    batch_sent_at: datetime | None = None,
    batch_context: dict[str, Any] | None = None,
    source_kind: str = SERVER,
) -> Envelope:
    # Which kind of source vouches for the event: intake's to say, never the client's.
    context = stamp({**(batch_context or {}), **call["context"]}, source_kind)
    if client_ip and "ip" not in context:
        context["ip"] = client_ip
    context["traffic_source"] = classify(context).as_dict()
    return new_event(
        call_type,
        _payload(call_type, call),
        source=source,
        event_id=event_id(source, call.get("messageId")),
        occurred_at=occurred_at(call, received_at, batch_sent_at),
        received_at=received_at,
        anonymous_id=call.get("anonymousId"),
        user_id=call.get("userId"),
        context=context,
    )

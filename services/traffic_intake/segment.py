"""Pure mapping from a validated Segment call to a Funnel event envelope.

Enrichment done here: ``receivedAt``; ``context.traffic_source`` (the channel, see
:mod:`channels`); ``occurred_at`` corrected for client clock skew
(``receivedAt - (sentAt - originalTimestamp)``, as Segment does) when the client sent
``originalTimestamp``, else the client's ``timestamp``, else ``receivedAt``; the client IP
in ``context.ip`` when the client did not set one; a messageId when the client sent none.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from services.traffic_intake.channels import classify
from shared.events import Envelope, new_event


def occurred_at(
    call: dict[str, Any], received_at: datetime, batch_sent_at: datetime | None
) -> datetime:
    sent_at = call.get("sentAt") or batch_sent_at
    original = call.get("originalTimestamp")
    if original is not None and sent_at is not None:
        return received_at - (sent_at - original)
    return call.get("timestamp") or original or received_at


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
) -> Envelope:
    context = {**(batch_context or {}), **call["context"]}
    if client_ip and "ip" not in context:
        context["ip"] = client_ip
    context["traffic_source"] = classify(context).as_dict()
    return new_event(
        call_type,
        _payload(call_type, call),
        source=source,
        event_id=call.get("messageId") or f"srv-{uuid.uuid4().hex}",
        occurred_at=occurred_at(call, received_at, batch_sent_at),
        received_at=received_at,
        anonymous_id=call.get("anonymousId"),
        user_id=call.get("userId"),
        context=context,
    )

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from marshmallow import ValidationError

from services.traffic_intake.schemas import TrackCall
from services.traffic_intake.segment import occurred_at, source_tag, to_envelope

RECEIVED = datetime(2026, 11, 1, 12, 0, 0, tzinfo=UTC)


def test_clock_skew_is_corrected_like_segment() -> None:
    # The client's clock runs 1 hour fast; the event happened 30 s before sending.
    sent = RECEIVED + timedelta(hours=1)
    original = sent - timedelta(seconds=30)
    call = {"originalTimestamp": original, "sentAt": sent, "timestamp": None}
    assert occurred_at(call, RECEIVED, None) == RECEIVED - timedelta(seconds=30)


def test_batch_sent_at_applies_when_the_event_has_none() -> None:
    call = {"originalTimestamp": RECEIVED, "sentAt": None, "timestamp": None}
    assert occurred_at(call, RECEIVED, RECEIVED + timedelta(seconds=5)) == RECEIVED - timedelta(
        seconds=5
    )


def test_without_client_times_the_event_happened_when_received() -> None:
    assert occurred_at({"timestamp": None}, RECEIVED, None) == RECEIVED


@pytest.mark.parametrize("junk", ["", "null", "undefined", "0", "NaN", "[object Object]", None])
def test_junk_ids_are_rejected(junk: object) -> None:
    with pytest.raises(ValidationError) as info:
        TrackCall().load({"anonymousId": junk, "event": "X"})
    assert "anonymousId" in info.value.messages or "userId" in info.value.messages


def test_integer_ids_are_accepted_as_strings() -> None:
    assert TrackCall().load({"userId": 42, "event": "X"})["userId"] == "42"


def test_envelope_keeps_client_context_and_adds_ip_and_message_id() -> None:
    call = TrackCall().load({"anonymousId": "a", "event": "X", "context": {"locale": "zh-TW"}})
    env = to_envelope("track", call, source="web", received_at=RECEIVED, client_ip="10.1.2.3")
    assert env.context == {
        "locale": "zh-TW",
        "ip": "10.1.2.3",
        "traffic_source": {"channel": "direct"},
        "funnel": {"source_kind": "server"},  # intake's word on the source, not the client's
    }
    assert env.event_id.startswith("srv-")
    assert env.payload == {"event": "X", "properties": {}}
    given = TrackCall().load(
        {"anonymousId": "a", "event": "X", "messageId": "m-1", "context": {"ip": "1.1.1.1"}}
    )
    env = to_envelope("track", given, source="web", received_at=RECEIVED, client_ip="10.1.2.3")
    assert env.event_id == f"{source_tag('web')}:m-1"
    assert env.context["ip"] == "1.1.1.1"

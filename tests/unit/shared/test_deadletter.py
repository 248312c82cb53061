"""Dead letters: headers round-trip, replay targets."""

from __future__ import annotations

from shared.deadletter import DeadLetter, parse_headers, replay_target


def test_dead_letter_headers_round_trip() -> None:
    letter = DeadLetter("funnel.traffic", 3, 42, b"k", b"v", "lead-scoring", "bad_json", "why")
    info = parse_headers([*letter.headers(), ("other", b"x")])
    assert info["source"] == "funnel.traffic"
    assert (info["partition"], info["offset"]) == ("3", "42")
    assert (info["consumer"], info["kind"], info["reason"]) == ("lead-scoring", "bad_json", "why")
    assert replay_target(info) == "funnel.traffic"
    assert replay_target({"source": "http:/v1/batch"}) is None
    # No message to send back: a timer's failure, an outbox row Kafka refused.
    assert replay_target({"source": "timer:sla"}) is None
    assert replay_target({"source": "outbox:outbox"}) is None

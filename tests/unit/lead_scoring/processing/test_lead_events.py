"""Coalescing a batch's ``lead.scored`` events (pure): one per lead, every point kept."""

from __future__ import annotations

import json
from typing import Any

from services.lead_scoring.processing import lead_events
from services.lead_scoring.processing.lead_events import coalesce_scored
from shared.events import new_event
from shared.outbox import Outgoing
from shared.topics import LEADS


def scored(lead: str, version: int, points: int, delta: int, cause: str) -> Outgoing:
    payload = {
        "lead": {"lead_id": lead, "version": version, "score": version * 10, "stage": "lead"},
        "delta": delta,
        "points": [
            {"rule_id": "r", "points": 1, "reason": "x", "event_id": f"{cause}-{i}"}
            for i in range(points)
        ],
    }
    return Outgoing(LEADS, lead, new_event("lead.scored", payload, source="lead-scoring"))


def other(lead: str, kind: str = "lead.stage_changed") -> Outgoing:
    return Outgoing(LEADS, lead, new_event(kind, {"lead": {"lead_id": lead}}, source="x"))


def summary(out: list[Outgoing]) -> list[tuple[str, str, Any]]:
    return [
        (
            o.key,
            o.envelope.type,
            (
                o.envelope.payload["lead"]["version"],
                o.envelope.payload["delta"],
                len(o.envelope.payload["points"]),
            )
            if o.envelope.type == "lead.scored"
            else None,
        )
        for o in out
    ]


def test_each_leads_scores_become_one_at_the_place_of_the_last() -> None:
    batch = [
        scored("A", 1, 2, 5, "e1"),
        scored("B", 1, 1, 1, "e2"),
        other("A"),
        scored("A", 2, 3, -2, "e3"),
        other("B", "lead.assigned"),
    ]
    out = coalesce_scored(batch)
    assert summary(out) == [
        ("B", "lead.scored", (1, 1, 1)),  # alone: as it was
        ("A", "lead.stage_changed", None),
        ("A", "lead.scored", (2, 3, 5)),
        ("B", "lead.assigned", None),
    ]
    assert out[0] is batch[1]
    points = [p["event_id"] for p in out[2].envelope.payload["points"]]
    assert points == ["e1-0", "e1-1", "e3-0", "e3-1", "e3-2"]
    again = coalesce_scored(batch)[2].envelope.event_id
    assert again == out[2].envelope.event_id != batch[3].envelope.event_id  # deterministic


def test_a_busy_lead_is_split_at_the_points_limit(monkeypatch: Any) -> None:
    monkeypatch.setattr(lead_events, "MAX_COALESCED_POINTS", 5)
    batch = [scored("A", v, 2, 1, f"e{v}") for v in range(1, 6)]  # 10 points in all
    out = coalesce_scored(batch)
    assert [s[2] for s in summary(out)] == [(2, 2, 4), (4, 2, 4), (5, 1, 2)]
    assert sum(len(o.envelope.payload["points"]) for o in out) == 10


def test_nothing_to_coalesce_is_the_same_list() -> None:
    batch = [scored("A", 1, 1, 1, "e1"), other("A"), scored("B", 1, 1, 1, "e2")]
    assert coalesce_scored(batch) == batch
    assert coalesce_scored([]) == []


def test_a_coalesced_event_stays_far_below_the_message_limit() -> None:
    """Reasons of 200 non-ASCII characters encode at ~1.4 KB a point: a thousand points
    would pass Kafka's 1 MB; the byte cap splits them first."""
    long = "客" * 200
    batch = []
    for v in range(1, 21):
        out = scored("A", v, 50, 50, f"e{v}")
        for point in out.envelope.payload["points"]:
            point["reason"] = long
        batch.append(out)
    coalesced = coalesce_scored(batch)
    assert 1 < len(coalesced) < len(batch)
    assert sum(len(o.envelope.payload["points"]) for o in coalesced) == 1000
    for o in coalesced:
        assert len(json.dumps(o.envelope.payload)) <= lead_events.MAX_COALESCED_BYTES + 80_000

"""New MQLs are assigned once, never reassigned, spread round robin."""

from __future__ import annotations

from flask import Flask

from shared.events import new_event
from tests.unit.lead_scoring.conftest import (
    SALES,
    Feeder,
    add_rep,
    lead,
    make_mql,
    types,
)


def test_new_mqls_are_routed_once_and_never_reassigned(scoring_app: Flask, feed: Feeder) -> None:
    client = scoring_app.test_client()
    tw = add_rep(client, "mei", countries=["TW"])
    add_rep(client, "ann")
    feed(
        new_event(
            "identify", {"traits": {"email": "a@x.co", "country": "TW"}}, source="w", user_id="u1"
        )
    )
    result = feed(new_event("track", {"event": "Form Submitted"}, source="w", user_id="u1"))
    assert types(result) == ["lead.scored", "lead.stage_changed", "lead.assigned"]
    assigned = result.outgoing[-1].envelope.payload
    assert (assigned["owner_id"], assigned["owner_name"]) == (tw["id"], "mei")
    assert assigned["lead"]["owner_id"] == tw["id"]
    lead_id = assigned["lead"]["lead_id"]
    again = feed(new_event("track", {"event": "Form Submitted"}, source="w", user_id="u1"))
    assert "lead.assigned" not in types(again)
    assert lead(scoring_app, lead_id).owner_id == tw["id"]
    queue = client.get(f"/leads?owner_id={tw['id']}", headers=SALES).json
    assert [x["id"] for x in queue["items"]] == [lead_id]


def test_round_robin_spreads_mqls_over_reps(scoring_app: Flask, feed: Feeder) -> None:
    client = scoring_app.test_client()
    reps = [add_rep(client, n)["id"] for n in ("a", "b", "c")]
    owners = [lead(scoring_app, make_mql(feed, f"u{i}")).owner_id for i in range(6)]
    assert owners == reps + reps

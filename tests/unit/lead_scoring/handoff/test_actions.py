"""Sales actions: accept, reject with reason codes, explicit moves and their errors;
recorded with who and why."""

from __future__ import annotations

import pytest
from flask import Flask

from shared.events import new_event
from tests.unit.lead_scoring.conftest import (
    SALES,
    Feeder,
    add_rep,
    lead,
    make_mql,
    queued,
)


def test_accept_makes_an_sql_recorded_with_who(scoring_app: Flask, feed: Feeder) -> None:
    client = scoring_app.test_client()
    mei = add_rep(client, "mei")
    lead_id = make_mql(feed, "u1")
    response = client.post(
        f"/leads/{lead_id}/accept",
        headers=SALES,
        json={"rep_id": mei["id"], "note": "called, keen"},
    )
    assert response.status_code == 200
    last = response.json["stage_history"][-1]
    assert (last["from_stage"], last["to_stage"]) == ("mql", "sql")
    # The shared sales token acting for mei is recorded as the token, not as mei: anyone
    # holding it could pick any rep (mei's own token records mei: test_rep_tokens).
    who = f"sales token for rep:{mei['id']}:mei"
    assert last["changed_by"] == who and "keen" in last["reason"]
    [event] = [p for p in queued(scoring_app, "lead.stage_changed") if p["to_stage"] == "sql"]
    assert event["changed_by"] == who
    again = client.post(f"/leads/{lead_id}/accept", headers=SALES, json={})
    assert again.status_code == 409 and again.json["error"]["code"] == "conflict"


@pytest.mark.parametrize(("code", "stage"), [("bad_timing", "recycled"), ("spam", "disqualified")])
def test_reject_with_a_reason_code_is_published_for_marketing(
    scoring_app: Flask, feed: Feeder, code: str, stage: str
) -> None:
    lead_id = make_mql(feed, "u1")
    response = scoring_app.test_client().post(
        f"/leads/{lead_id}/reject", headers=SALES, json={"reason_code": code}
    )
    assert response.json["stage"] == stage
    assert response.json["stage_history"][-1]["reason_code"] == code
    [event] = [p for p in queued(scoring_app, "lead.stage_changed") if p["to_stage"] == stage]
    assert (event["reason_code"], event["from_stage"]) == (code, "mql")


def test_recycled_leads_requalify_on_new_engagement_disqualified_never(
    scoring_app: Flask, feed: Feeder
) -> None:
    client = scoring_app.test_client()
    recycled, disqualified = make_mql(feed, "u1"), make_mql(feed, "u2")
    client.post(f"/leads/{recycled}/reject", headers=SALES, json={"reason_code": "no_budget"})
    client.post(f"/leads/{disqualified}/reject", headers=SALES, json={"reason_code": "spam"})
    feed(new_event("page", {"properties": {"path": "/"}}, source="w", user_id="u1"))
    feed(new_event("page", {"properties": {"path": "/"}}, source="w", user_id="u2"))
    assert lead(scoring_app, recycled).stage == "mql"
    assert lead(scoring_app, disqualified).stage == "disqualified"


def test_explicit_moves_and_their_errors(scoring_app: Flask, feed: Feeder) -> None:
    client = scoring_app.test_client()
    lead_id = make_mql(feed, "u1")
    client.post(f"/leads/{lead_id}/accept", headers=SALES, json={})
    moved = client.post(
        f"/leads/{lead_id}/stage",
        headers=SALES,
        json={"to_stage": "opportunity", "reason": "demo booked"},
    )
    assert moved.json["stage"] == "opportunity"
    back = client.post(
        f"/leads/{lead_id}/stage",
        headers=SALES,
        json={"to_stage": "lead", "reason": "champion left the company"},
    )
    assert back.json["stage"] == "lead"
    assert (
        client.post(
            f"/leads/{lead_id}/stage", headers=SALES, json={"to_stage": "lead", "reason": "again"}
        ).status_code
        == 409
    )
    bad = client.post(f"/leads/{lead_id}/reject", headers=SALES, json={"reason_code": "meh"})
    assert bad.status_code == 422 and "reason_code" in bad.json["error"]["fields"]
    assert client.post(f"/leads/{lead_id}/stage", headers=SALES, json={"to_stage": "sql"}).json[
        "error"
    ]["fields"].keys() == {"reason"}
    assert client.post("/leads/nope/accept", headers=SALES, json={}).status_code == 404
    assert (
        client.post(f"/leads/{lead_id}/accept", headers=SALES, json={"rep_id": 999}).status_code
        == 404
    )
    assert (
        client.post(
            f"/leads/{lead_id}/accept", headers={"Authorization": "Bearer marketing-t"}, json={}
        ).status_code
        == 403
    )

"""The sales handoff: routing, accept/reject with reasons, explicit moves, the SLA."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from sqlalchemy import select

from services.lead_scoring.handoff.routing import Candidate, choose_rep
from services.lead_scoring.jobs.sla import escalate_overdue
from services.lead_scoring.models import Lead, outbox
from services.lead_scoring.state import STATE as SCORING_STATE
from shared.events import new_event
from tests.unit.lead_scoring.conftest import (
    ADMIN,
    SALES,
    Feeder,
    add_rep,
    lead,
    make_mql,
    queued,
    types,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def rep(id_: int, countries=(), industries=(), last=None, available=True) -> Candidate:
    return Candidate(id_, f"rep{id_}", available, tuple(countries), tuple(industries), last)


def test_routing_prefers_the_most_specific_territory_then_round_robin() -> None:
    reps = [
        rep(1),
        rep(2, ["TW"]),
        rep(3, ["TW"], ["software"], last=T0),
        rep(4, ["TW"], ["software"]),
        rep(5, ["TW"], ["software"], available=False),
    ]
    chosen = choose_rep({"country": "tw"}, {"industry": "Software"}, reps)
    assert chosen is not None and chosen.rep_id == 4  # never assigned beats assigned at T0
    assert "country=tw" in chosen.reason and "industry=software" in chosen.reason
    assert choose_rep({"country": "JP"}, {}, reps).rep_id == 1  # type: ignore[union-attr]
    assert choose_rep({}, {}, [rep(2, ["TW"])]) is None
    assert choose_rep({"address": {"country": "TW"}}, {}, [rep(2, ["TW"])]).rep_id == 2  # type: ignore[union-attr]


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
    assert last["changed_by"] == f"rep:{mei['id']}:mei" and "keen" in last["reason"]
    [event] = [p for p in queued(scoring_app, "lead.stage_changed") if p["to_stage"] == "sql"]
    assert event["changed_by"] == f"rep:{mei['id']}:mei"
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


def test_overdue_mqls_are_listed_and_escalated_once(scoring_app: Flask, feed: Feeder) -> None:
    client = scoring_app.test_client()
    late, on_time = make_mql(feed, "u1"), make_mql(feed, "u2")
    sessions = scoring_app.extensions[SCORING_STATE].sessions
    with sessions.begin() as s:
        s.get(Lead, late).mql_at = datetime.now(UTC) - timedelta(hours=30)  # type: ignore[union-attr]
    overdue = client.get("/leads/overdue", headers=SALES).json
    assert [x["id"] for x in overdue["items"]] == [late]
    assert 5.5 < overdue["items"][0]["overdue_hours"] < 6.5
    with sessions.begin() as s:
        first = escalate_overdue(s, datetime.now(UTC), 24.0)
    with sessions.begin() as s:
        second = escalate_overdue(s, datetime.now(UTC), 24.0)
    assert [o.envelope.payload["lead"]["lead_id"] for o in first] == [late]
    assert first[0].envelope.type == "lead.sla_breached" and second == []
    client.post(f"/leads/{late}/accept", headers=SALES, json={})
    assert client.get("/leads/overdue", headers=SALES).json["items"] == []
    assert on_time != late


def test_reps_admin(scoring_app: Flask) -> None:
    client = scoring_app.test_client()
    created = add_rep(client, "mei", countries=["TW"])
    assert (
        client.post(
            "/admin/reps", headers=ADMIN, json={"name": "x", "email": "mei@corp.example"}
        ).status_code
        == 409
    )
    assert client.post("/admin/reps", headers=ADMIN, json={"name": "", "email": "nope"}).json[
        "error"
    ]["fields"].keys() == {"name", "email"}
    patched = client.patch(f"/admin/reps/{created['id']}", headers=ADMIN, json={"available": False})
    assert patched.json["available"] is False
    assert client.patch("/admin/reps/99", headers=ADMIN, json={}).status_code == 404
    assert client.get("/admin/reps", headers=SALES).status_code == 200
    assert client.post("/admin/reps", headers=SALES, json={}).status_code == 403


def test_an_escalation_that_fails_alone_is_reported_and_the_rest_go_out(
    scoring_app: Flask, feed: Feeder, monkeypatch: pytest.MonkeyPatch
) -> None:
    for user in ("ok", "bad"):
        make_mql(feed, user)
    from services.lead_scoring.jobs import sla

    real = sla.snapshot

    def poisoned(store, lead, identities=None):  # type: ignore[no-untyped-def]
        if lead.user_id == "bad":
            raise KeyError("broken snapshot")
        return real(store, lead, identities)

    monkeypatch.setattr(sla, "snapshot", poisoned)
    later = datetime.now(UTC) + timedelta(hours=30)
    with scoring_app.extensions[SCORING_STATE].sessions.begin() as s:
        events = escalate_overdue(s, later, 24.0)
        assert [e.envelope.payload["lead"]["user_id"] for e in events] == ["ok"]
        letters = [r for r in s.execute(select(outbox)) if r.topic == "funnel.deadletter"]
        assert [r.headers["dlq.source"] for r in letters] == ["timer:sla"]
        # Both are marked: the bad one is not retried every 30 s forever.
        assert escalate_overdue(s, later, 24.0) == []

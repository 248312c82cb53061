"""Reps' personal tokens: a token acts as its rep only; issuing again replaces it, revoking
ends it."""

from __future__ import annotations

from flask import Flask

from tests.unit.lead_scoring.conftest import (
    ADMIN,
    SALES,
    Feeder,
    add_rep,
    bearer,
    issue_token,
    make_mql,
)


def test_a_rep_token_acts_as_that_rep_only(scoring_app: Flask, feed: Feeder) -> None:
    client = scoring_app.test_client()
    mei = add_rep(client, "Mei")
    other = add_rep(client, "Ola")
    token = issue_token(client, mei["id"])
    first, second = make_mql(feed, "u1"), make_mql(feed, "u2")

    assert client.get("/leads", headers=bearer(token)).status_code == 200
    assert client.get("/admin/scoring/rules", headers=bearer(token)).status_code == 403
    posed = client.post(
        f"/leads/{first}/accept", headers=bearer(token), json={"rep_id": other["id"]}
    )
    assert posed.status_code == 403
    assert "rep_id" in posed.json["error"]["fields"]

    accepted = client.post(f"/leads/{first}/accept", headers=bearer(token), json={})
    assert accepted.status_code == 200, accepted.json
    assert accepted.json["stage_history"][-1]["changed_by"] == f"rep:{mei['id']}:Mei"
    # The shared sales token still works, naming a rep or nobody.
    shared = client.post(
        f"/leads/{second}/reject",
        headers=SALES,
        json={"reason_code": "bad_timing", "rep_id": other["id"]},
    )
    # The shared token working Ola's queue: recorded as the token, never as Ola.
    assert (
        shared.json["stage_history"][-1]["changed_by"] == f"sales token for rep:{other['id']}:Ola"
    )


def test_issuing_again_replaces_the_token_and_revoking_ends_it(scoring_app: Flask) -> None:
    client = scoring_app.test_client()
    mei = add_rep(client, "Mei")
    old = issue_token(client, mei["id"])
    new = issue_token(client, mei["id"])
    assert old != new and new.startswith("rep_")
    assert client.get("/leads", headers=bearer(old)).status_code == 401
    assert client.get("/leads", headers=bearer(new)).status_code == 200
    assert client.delete(f"/admin/reps/{mei['id']}/token", headers=ADMIN).status_code == 204
    assert client.get("/leads", headers=bearer(new)).status_code == 401
    assert client.delete(f"/admin/reps/{mei['id']}/token", headers=ADMIN).status_code == 404
    assert client.post("/admin/reps/999/token", headers=ADMIN).status_code == 404
    assert client.post(f"/admin/reps/{mei['id']}/token", headers=SALES).status_code == 403
    assert client.get("/leads", headers=bearer("rep_guessed")).status_code == 401

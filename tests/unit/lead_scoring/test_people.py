"""Sales reps as people: personal tokens on the API and the pages, and pages that answer
errors as pages."""

from __future__ import annotations

import pytest
from flask import Flask

from tests.unit.lead_scoring.conftest import (
    ADMIN,
    SALES,
    Feeder,
    add_rep,
    bearer,
    issue_token,
    make_mql,
    page_login,
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
    assert shared.json["stage_history"][-1]["changed_by"] == f"rep:{other['id']}:Ola"


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


def test_pages_signed_in_with_a_rep_token_are_that_reps(scoring_app: Flask, feed: Feeder) -> None:
    client = scoring_app.test_client()
    mei = add_rep(client, "Mei")
    ola = add_rep(client, "Ola")
    token = issue_token(client, mei["id"])
    lead_id = make_mql(feed, "u1")  # routed to one of the two

    browser = scoring_app.test_client()
    csrf = page_login(browser, token)
    queue = browser.get(f"/app/?rep_id={ola['id']}").text  # cannot look as someone else
    assert "Signed in as <b>Mei</b>" in queue
    assert 'name="rep_id"' not in queue
    done = browser.post(f"/app/leads/{lead_id}/accept", data={"csrf": csrf})
    assert done.status_code == 302
    detail = client.get(f"/leads/{lead_id}", headers=SALES).json
    assert detail["stage"] == "sql"
    assert detail["stage_history"][-1]["changed_by"] == f"rep:{mei['id']}:Mei"

    issue_token(client, mei["id"])  # rotated: this browser is signed out
    assert browser.get("/app/").headers["Location"].startswith("/app/login")
    assert browser.post("/app/login", data={"token": token}).status_code == 401


@pytest.mark.parametrize(
    ("method", "path", "status", "says"),
    [
        ("get", "/app/leads/no-such-lead", 404, "no such page or lead"),
        ("get", "/app/no-such-page", 404, "no such page or lead"),
        ("post", "/app/leads/x/accept", 400, "invalid form token"),
        ("get", "/app/leads/x/accept", 405, "Method Not Allowed"),
    ],
)
def test_page_errors_are_pages(
    scoring_app: Flask, method: str, path: str, status: int, says: str
) -> None:
    browser = scoring_app.test_client()
    page_login(browser, "sales-t")
    response = getattr(browser, method)(path)
    assert response.status_code == status
    assert response.mimetype == "text/html"
    assert f"<h1>{status}" in response.text and says in response.text
    assert "Back to my queue" in response.text


def test_api_errors_stay_json_beside_the_pages(scoring_app: Flask) -> None:
    client = scoring_app.test_client()
    for path in ("/no-such-endpoint", "/application", "/leads/nope"):
        response = client.get(path, headers=SALES)
        assert response.status_code == 404
        assert response.json["error"]["code"] == "not_found"

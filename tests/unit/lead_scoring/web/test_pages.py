"""The sales pages: sign-in bound to the current token, a rep's own pages, errors as pages."""

from __future__ import annotations

import pytest
from flask import Flask

from services.lead_scoring.state import STATE as SCORING_STATE
from tests.helpers import login_csrf, page_login
from tests.unit.lead_scoring.conftest import (
    SALES,
    Feeder,
    add_rep,
    issue_token,
    make_mql,
)


def test_pages_need_a_configured_sales_token_and_rotation_signs_out(database_url: str) -> None:
    from services.lead_scoring.app import create_app, init_db
    from services.lead_scoring.config import ScoringConfig
    from shared.config import Tokens

    def app_with(sales: str):
        app = create_app(
            ScoringConfig(
                database_url=database_url,
                tokens=Tokens(sales=sales),
                secret_key="fixed-for-the-test",
            )
        )
        init_db(app.extensions[SCORING_STATE].engine)
        return app

    first = app_with("old-token").test_client()
    signing_in = {"token": "old-token", "csrf": login_csrf(first)}
    assert first.post("/app/login", data=signing_in).status_code == 302
    assert first.get("/app/leads").status_code == 200
    cookie = first.get_cookie("session")
    assert cookie is not None
    rotated = app_with("new-token").test_client()  # same secret, the sales token rotated
    rotated.set_cookie("session", cookie.value)
    assert rotated.get("/app/leads").status_code == 302  # back to sign-in
    nobody = app_with("").test_client()  # no sales token: nobody may use the pages
    nobody.set_cookie("session", cookie.value)
    assert nobody.get("/app/leads").status_code == 302
    assert (
        nobody.post("/app/login", data={"token": "", "csrf": login_csrf(nobody)}).status_code == 401
    )


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
    signing_in = {"token": token, "csrf": login_csrf(browser)}
    assert browser.post("/app/login", data=signing_in).status_code == 401


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

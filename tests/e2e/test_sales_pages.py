"""The sales pages in a real browser: headless Chromium (Debian's chromium and
chromium-driver) driven by Selenium against the scoring service on a real HTTP server.
Signs in, finds the MQL by priority, opens it (explanation, chart, timeline), accepts it,
and saves screenshots under var/test-artifacts/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select

from services.lead_scoring.app import create_app, init_db
from services.lead_scoring.config import ScoringConfig
from services.lead_scoring.models import Lead, StageChange
from services.lead_scoring.state import STATE as SCORING_STATE
from shared.events import new_event
from tests.e2e.conftest import ARTIFACTS
from tests.helpers import serving
from tests.unit.lead_scoring.conftest import TOKENS, Feeder

pytestmark = pytest.mark.e2e


@pytest.fixture
def server(scoring_app: Flask) -> Iterator[str]:
    with serving(scoring_app) as url:
        yield url


@pytest.fixture
def scoring_app(tmp_path: Path) -> Flask:
    app = create_app(
        ScoringConfig(database_url=f"sqlite:///{tmp_path / 'pages.db'}", tokens=TOKENS)
    )
    init_db(app.extensions[SCORING_STATE].engine)
    return app


@pytest.fixture
def feed(scoring_app: Flask) -> Feeder:
    return Feeder(scoring_app)


def test_sales_pages_accept_a_lead_in_chromium(
    scoring_app: Flask, feed: Feeder, server: str, browser
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    admin = scoring_app.test_client()
    auth = {"Authorization": f"Bearer {TOKENS.admin}"}
    rep = admin.post("/admin/reps", headers=auth, json={"name": "Mei", "email": "mei@x.co"}).json
    rep_token = admin.post(f"/admin/reps/{rep['id']}/token", headers=auth).json["token"]
    feed(
        new_event(
            "identify",
            {
                "traits": {
                    "email": "grace@example.com",
                    "name": "Grace Hopper",
                    "title": "CTO",
                    "country": "US",
                }
            },
            source="w",
            user_id="g",
        )
    )
    feed(
        new_event(
            "page", {"name": "Pricing", "properties": {"path": "/pricing"}}, source="w", user_id="g"
        )
    )
    feed(new_event("track", {"event": "Form Submitted"}, source="w", user_id="g"))
    wait = WebDriverWait(browser, 15)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    browser.get(f"{server}/app/")
    wait.until(ec.presence_of_element_located((By.NAME, "token")))  # redirected to sign in
    browser.find_element(By.NAME, "token").send_keys(rep_token)  # Mei's own token
    browser.find_element(By.CSS_SELECTOR, "button.primary").click()
    wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "main"), "Signed in as Mei"))
    row = browser.find_element(By.LINK_TEXT, "Grace Hopper")  # routed to Mei: her queue
    assert "mql" in browser.find_element(By.TAG_NAME, "tbody").text
    row.click()

    wait.until(ec.presence_of_element_located((By.ID, "score-chart")))
    assert browser.find_element(By.ID, "score").text == "66"
    assert "Submitted a form" in browser.page_source
    polyline = browser.find_element(By.CSS_SELECTOR, "#score-chart polyline")
    assert len(polyline.get_attribute("points").split()) == 9  # origin + a step per award
    browser.save_screenshot(str(ARTIFACTS / "sales-lead-before-accept.png"))

    browser.find_element(By.ID, "accept").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "stage"), "sql"))
    assert "Accepted" in browser.find_element(By.CSS_SELECTOR, ".flash").text
    shot = ARTIFACTS / "sales-lead-accepted.png"
    browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000

    with scoring_app.extensions[SCORING_STATE].sessions() as session:
        lead = session.query(Lead).filter_by(email="grace@example.com").one()
        assert lead.stage == "sql"
        accepted_by = session.scalars(
            select(StageChange.changed_by).where(
                StageChange.lead_id == lead.id, StageChange.to_stage == "sql"
            )
        ).one()
        assert accepted_by == f"rep:{rep['id']}:Mei"  # the signed-in person, not a pick


def test_a_rep_splits_a_wrong_merge_from_the_lead_page_in_chromium(
    scoring_app: Flask, feed: Feeder, server: str, browser
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.unit.lead_scoring.processing.test_split import lead_of, script

    events, _ = script()
    feed(*events)
    ada = lead_of(scoring_app, "ada-laptop")
    assert lead_of(scoring_app, "bob-laptop") == ada
    wait = WebDriverWait(browser, 15)
    browser.get(f"{server}/app/login")
    browser.find_element(By.NAME, "token").send_keys(TOKENS.sales)
    browser.find_element(By.CSS_SELECTOR, "button.primary").click()
    # Signed in once the browser has left the sign-in page (its <main> is there too).
    wait.until(lambda d: "/app/login" not in d.current_url)
    browser.get(f"{server}/app/leads/{ada}")
    wait.until(ec.presence_of_element_located((By.ID, "merges")))
    identities = browser.find_element(By.ID, "identities").text
    assert "bob-laptop" in identities and "web" in identities  # where it came from
    form = browser.find_element(By.CSS_SELECTOR, "#merges form")
    form.find_element(By.NAME, "reason").send_keys("a colleague typed Ada's e-mail")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "sales-lead-before-split.png"))
    form.find_element(By.CSS_SELECTOR, "button.split-merge").click()
    wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, ".flash"), "Split"))
    assert "split by sales" in browser.find_element(By.ID, "merges").text
    assert "bob-laptop" not in browser.find_element(By.ID, "identities").text
    browser.save_screenshot(str(ARTIFACTS / "sales-lead-after-split.png"))
    assert lead_of(scoring_app, "bob-laptop") != ada

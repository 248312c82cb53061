"""The marketing pages in a real browser (headless Chromium via Selenium) against the
retargeting service on a real HTTP server: sign in, read the segments' live counts,
preview a rule, build a campaign over the cart abandoners, run it, watch the run finish
and read its report chart, look at the members. Screenshots under var/test-artifacts/."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from flask import Flask

from services.member_retargeting.app import create_app, init_db
from services.member_retargeting.config import RetargetingConfig
from services.member_retargeting.state import STATE as RETARGETING_STATE
from shared.db import utcnow
from shared.topics import DISPATCH
from tests.e2e.conftest import ARTIFACTS
from tests.helpers import serving
from tests.unit.member_retargeting.conftest import (
    TOKENS,
    consent,
    did,
    feed,
    order,
    published,
    stage,
    work_runs,
)

pytestmark = pytest.mark.e2e


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    app = create_app(
        RetargetingConfig(database_url=f"sqlite:///{tmp_path / 'pages.db'}", tokens=TOKENS)
    )
    init_db(app.extensions[RETARGETING_STATE].engine)
    return app


@pytest.fixture
def server(app: Flask) -> Iterator[str]:
    with serving(app) as url:
        yield url


def population(app: Flask) -> None:
    now = utcnow()
    feed(
        app,
        stage("A", "lead", email="ada@example.com", user="a", traits={"firstName": "Ada"}),
        stage("B", "lead", email="bo@example.com", user="b", traits={"firstName": "Bo"}),
        stage("C", "lead", email="cy@example.com", user="c"),  # no consent
        stage("G", "customer", email="gus@example.com", user="g", traits={"firstName": "Gus"}),
        *(consent(u, marketing=True) for u in "abg"),
        did(
            "a",
            "Product Added",
            product_id="k1",
            name="Kettle",
            category="kitchen",
            at=now - timedelta(hours=20),
        ),
        did(
            "b",
            "Product Added",
            product_id="m1",
            name="Mug",
            category="kitchen",
            at=now - timedelta(hours=22),
        ),
        did(
            "c",
            "Product Added",
            product_id="k1",
            name="Kettle",
            category="kitchen",
            at=now - timedelta(hours=5),
        ),
        did("g", "Product Viewed", product_id="s1", name="Sofa", category="living"),
        order(
            "g",
            2600,
            at=now - timedelta(days=20),
            products=[{"product_id": "s1", "name": "Sofa", "category": "living"}],
        ),
    )
    work_runs(app)  # the daily pass scores RFM


def test_marketing_runs_a_cart_campaign_from_the_pages_in_chromium(
    app: Flask, server: str, browser
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    population(app)
    wait = WebDriverWait(browser, 15)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    browser.get(f"{server}/app/")
    browser.find_element(By.NAME, "token").send_keys(TOKENS.marketing)
    browser.find_element(By.CSS_SELECTOR, "button.primary").click()
    row = wait.until(
        ec.presence_of_element_located((By.CSS_SELECTOR, 'tr[data-segment="Cart abandoners"]'))
    )
    assert row.find_element(By.CSS_SELECTOR, ".count").text == "3"  # A, B, C added, no order
    vips = browser.find_element(By.CSS_SELECTOR, 'tr[data-segment="VIPs"] .count')
    assert vips.text == "1"  # Gus: gold
    browser.save_screenshot(str(ARTIFACTS / "marketing-segments.png"))

    rule = browser.find_element(By.ID, "rule")
    rule.send_keys('{"event": "Product Added", "category": "kitchen", "within_days": 1}')
    browser.find_element(By.ID, "preview").click()
    count = wait.until(ec.presence_of_element_located((By.ID, "preview-count")))
    assert count.text == "3"
    browser.find_element(By.ID, "rule").clear()
    browser.find_element(By.ID, "rule").send_keys('{"event": "Product Added", "within_days": 0}')
    browser.find_element(By.ID, "preview").click()
    problems = wait.until(ec.presence_of_element_located((By.ID, "problems")))
    assert "rule.within_days" in problems.text
    browser.save_screenshot(str(ARTIFACTS / "marketing-preview-problem.png"))

    browser.get(f"{server}/app/campaigns")
    browser.find_element(By.ID, "c-name").send_keys("Your cart misses you")
    Select(browser.find_element(By.ID, "c-segment-id")).select_by_visible_text("Cart abandoners")
    browser.find_element(By.ID, "c-subject").send_keys("{{ first_name | default('Hi') }}, still?")
    browser.find_element(By.ID, "c-body").send_keys("The {{ product }} is waiting.")
    browser.save_screenshot(str(ARTIFACTS / "marketing-campaign-builder.png"))
    browser.find_element(By.ID, "create").click()
    wait.until(ec.presence_of_element_located((By.ID, "run"))).click()
    wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, ".flash"), "started for 3"))
    assert browser.find_element(By.CSS_SELECTOR, "#runs .status").text == "pending"

    work_runs(app)  # what the scheduler process does; the page refreshes itself meanwhile
    wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, "#runs .status"), "done"))
    assert browser.find_element(By.ID, "dispatched").text == "2"
    assert browser.find_element(By.ID, "skipped").text == "1"  # Cy never consented
    bars = browser.find_elements(By.CSS_SELECTOR, "#chart rect")
    labels = [b.find_element(By.TAG_NAME, "title").get_attribute("textContent") for b in bars]
    assert "Dispatched: 2" in labels and "Skipped: no consent: 1" in labels
    browser.save_screenshot(str(ARTIFACTS / "marketing-campaign-report.png"))
    sent = {e.payload["contact_id"]: e.payload["message"] for e in published(app, DISPATCH)}
    assert sent["A"] == {"subject": "Ada, still?", "body": "The Kettle is waiting."}
    assert set(sent) == {"A", "B"}

    browser.get(f"{server}/app/members")
    member = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, 'tr[data-member="G"]')))
    assert "gold" in member.text and "Sofa" in member.text
    browser.save_screenshot(str(ARTIFACTS / "marketing-members.png"))
    for name in ("segments", "campaign-report", "members"):
        assert (ARTIFACTS / f"marketing-{name}.png").stat().st_size > 5000

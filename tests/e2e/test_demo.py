"""``make demo`` against the whole funnel as ``make run`` starts it (the ``funnel`` fixture
of :mod:`tests.e2e.test_journey`: embedded broker, three gunicorn APIs, relay, consumers,
scheduler, dispatcher). A small demo run must leave scored leads in lead-scoring's API,
members and a saved segment with a draft (never run) campaign in member-retargeting's —
and a funnel report that reconciles with both."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from deploy.demo import CAMPAIGN_NAME, SEGMENT_NAME, generate
from services.member_retargeting.model.funnel import FROM_LEAD_STAGE, STAGES
from shared.config import default_sqlite_url
from tests.conftest import wait_for
from tests.e2e.conftest import ARTIFACTS
from tests.e2e.test_journey import CREDENTIALS, Funnel
from tests.e2e.test_journey import funnel as funnel  # the fixture, reused

pytestmark = pytest.mark.e2e

SEED, VISITORS = 11, 40


def test_demo_fills_the_funnel(funnel: Funnel) -> None:
    expected = generate(SEED, VISITORS, datetime.now(UTC)).counts()
    # The seed was chosen for a journey set that holds every step.
    assert expected["form_fills"] and expected["buyers"] and expected["abandoned_carts"]
    leads_before = funnel.sales("/leads?page_size=1")["total"]

    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "deploy.demo",
            *("--visitors", str(VISITORS), "--seed", str(SEED), "--max-seconds", "60"),
            *("--intake-url", funnel.intake, "--scoring-url", funnel.scoring),
            *("--retargeting-url", funnel.retargeting),
            *("--write-key", CREDENTIALS["FUNNEL_WRITE_KEY"]),
            *("--sales-token", CREDENTIALS["FUNNEL_SALES_TOKEN"]),
            *("--marketing-token", CREDENTIALS["FUNNEL_MARKETING_TOKEN"]),
        ],
        capture_output=True,
        text=True,
        timeout=80,
        cwd=Path(__file__).parents[2],
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"intake accepted {expected['calls']} events" in run.stdout
    assert f"{funnel.scoring}/app/leads" in run.stdout
    assert f"{funnel.retargeting}/app/campaigns/" in run.stdout

    # Leads, scored: anonymous visitors, identified ones past the MQL threshold, buyers.
    leads = funnel.sales("/leads?page_size=200&sort=-score")
    assert leads["total"] - leads_before >= VISITORS - 5  # analytics-denied ones go unnamed
    scored = [lead for lead in leads["items"] if lead["score"] > 0]
    assert len(scored) >= VISITORS // 2
    assert any(lead["email"] and lead["email"].endswith(".example") for lead in scored)
    assert leads["items"][0]["score"] >= 50
    qualified = sum(
        funnel.sales(f"/leads?page_size=1&stage={stage}")["total"] for stage in ("mql", "customer")
    )
    assert qualified >= 1
    assert funnel.sales("/leads?page_size=1&stage=customer")["total"] >= 1

    # Members from the server-side orders; the demo's segment and its draft campaign.
    assert funnel.marketing("GET", "/members").json()["total"] >= 1
    segments = funnel.marketing("GET", "/segments").json()["items"]
    [segment] = [s for s in segments if s["name"] == SEGMENT_NAME]
    assert segment["count"] is not None and segment["count"] >= 0
    campaigns = funnel.marketing("GET", "/campaigns").json()["items"]
    [campaign] = [c for c in campaigns if c["name"] == CAMPAIGN_NAME]
    assert campaign["segment"] == segment["rule"]
    assert campaign["runs"] == []  # worth triggering, not triggered


def _held(funnel: Funnel) -> list[int]:
    """The funnel as the services' own stores tell it: lead-scoring's leads (a merged
    lead counts in the one it went to) and the furthest stage each reached by its stage
    history, and member-retargeting's members."""
    var = funnel.log.parent
    scoring = create_engine(default_sqlite_url(var, "lead_scoring"))
    retargeting = create_engine(default_sqlite_url(var, "member_retargeting"))
    try:
        with scoring.connect() as conn:
            leads = {
                row.id: row
                for row in conn.execute(text("SELECT id, stage, merged_into FROM leads"))
            }
            changes = list(conn.execute(text("SELECT lead_id, to_stage FROM stage_changes")))
        with retargeting.connect() as conn:
            members = {
                row[0]
                for row in conn.execute(
                    text("SELECT lead_id FROM contacts WHERE is_member AND merged_into IS NULL")
                )
            }
    finally:
        scoring.dispose()
        retargeting.dispose()

    def root(lead_id: str) -> str:
        for _ in range(50):
            into = leads[lead_id].merged_into if lead_id in leads else None
            if into is None:
                return lead_id
            lead_id = into
        raise AssertionError("merge chain too long")

    def rank(stage: str) -> int:
        step = FROM_LEAD_STAGE.get(stage)
        return -1 if step is None else STAGES.index(step)

    reached = {lead_id: 0 for lead_id, lead in leads.items() if lead.merged_into is None}
    for lead_id, lead in leads.items():
        top = root(lead_id)
        reached[top] = max(reached[top], rank(lead.stage))
    for lead_id, to_stage in changes:
        top = root(lead_id)
        reached[top] = max(reached[top], rank(to_stage))
    counts = [len(reached)]
    for k in range(1, len(STAGES) - 1):
        counts.append(sum(1 for r, got in reached.items() if got >= k or r in members))
    counts.append(sum(1 for r in reached if r in members))
    return counts


def test_the_funnel_reconciles_with_the_leads_and_members_held(
    funnel: Funnel, browser: Any
) -> None:
    """After the demo's traffic (the test above): the funnel report's stage counts equal
    what lead-scoring and member-retargeting hold, once both consumers have caught up
    (equal twice in a row, two seconds apart); then the page shows them, screenshot."""
    now = datetime.now(UTC)
    window = {
        "since": (now - timedelta(days=30)).isoformat(),
        "until": (now + timedelta(hours=1)).isoformat(),
    }

    def reported() -> dict[str, Any]:
        response = funnel.marketing("GET", "/funnel", params=window)
        assert response.status_code == 200, response.text
        return response.json()

    def agree() -> list[int] | None:
        first = [s["count"] for s in reported()["stages"]]
        if first != _held(funnel):
            return None
        time.sleep(2)
        second = [s["count"] for s in reported()["stages"]]
        return second if second == first == _held(funnel) else None

    try:
        counts: Any = wait_for(
            agree, timeout=90, interval=1.0, message="funnel report equal to the stores"
        )
    except AssertionError as timeout:
        raise AssertionError(
            f"report {[s['count'] for s in reported()['stages']]} != held {_held(funnel)}"
        ) from timeout
    assert counts[0] >= VISITORS and counts[-1] >= 1  # a living funnel, members included
    assert counts == sorted(counts, reverse=True)
    report = reported()
    channels = {row["channel"] for row in report["by_channel"]}
    assert {"organic_search", "paid_search", "email", "direct"} <= channels
    assert sum(row["stages"][0]["count"] for row in report["by_channel"]) == counts[0]
    assert report["median_seconds"]["visitor_to_lead"] is not None
    precursors = funnel.marketing("GET", "/funnel/precursors", params=window).json()
    assert precursors["buyers"] >= 1 and precursors["products"]

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{funnel.retargeting}/app/login?next=/app/funnel%3Fdays%3D30")
    browser.find_element(By.NAME, "token").send_keys(CREDENTIALS["FUNNEL_MARKETING_TOKEN"])
    browser.find_element(By.CSS_SELECTOR, "button.primary").click()
    # Signed in and sent on to the funnel (navigating before the sign-in answered would
    # land on the sign-in page again).
    WebDriverWait(browser, 20).until(
        lambda b: b.find_elements(By.CSS_SELECTOR, "#funnel-chart g.stage")
    )
    bars = browser.find_elements(By.CSS_SELECTOR, "#funnel-chart g.stage")
    assert [int(b.get_attribute("data-count")) for b in bars] == counts
    assert browser.find_element(By.CSS_SELECTOR, 'tr[data-channel="organic_search"]')
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "marketing-funnel.png"))

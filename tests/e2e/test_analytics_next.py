"""A real browser SDK delivers to intake: Segment's ``@segment/analytics-next`` (npm,
version pinned in ``tests/e2e/analytics_next/package.json``), bundled with esbuild by the
test session, loaded by a shop page on a second localhost origin and pointed at intake
the documented way (``AnalyticsBrowser.load({writeKey, cdnURL: <intake>})``: intake
serves its settings and the short paths it posts to). The journey arrives with the
SDK's own context and becomes a lead, not a customer. Screenshot under
var/test-artifacts/."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, Response

from services.lead_scoring.models import Lead
from services.lead_scoring.state import STATE as SCORING_STATE
from tests.conftest import wait_for
from tests.e2e.conftest import ARTIFACTS
from tests.e2e.test_browser_tracking import (  # noqa: F401 - fixtures
    PUBLIC_KEY,
    intake,
    intake_events,
    scoring_app,
    until_ordered,
)
from tests.helpers import LateApp, open_site
from tests.unit.lead_scoring.conftest import Feeder

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).parents[2]
SOURCE = Path(__file__).with_name("analytics_next")
BUNDLE = ROOT / "var" / "analytics-next" / "analytics-next.js"


@pytest.fixture(scope="session")
def analytics_next() -> bytes:
    """The SDK bundled for the page: built once (``npm ci`` from the lock file, then
    esbuild), kept under var/ until the lock file changes."""
    lock = SOURCE / "package-lock.json"
    if BUNDLE.exists() and BUNDLE.stat().st_mtime > lock.stat().st_mtime:
        return BUNDLE.read_bytes()
    npm = shutil.which("npm")
    if npm is None:
        reason = "npm not installed: the analytics-next bundle cannot be built"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=SOURCE,
        check=True,
        timeout=300,
    )
    BUNDLE.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            str(SOURCE / "node_modules" / ".bin" / "esbuild"),
            "entry.js",
            "--bundle",
            "--format=iife",
            "--minify",
            "--target=es2020",
            f"--outfile={BUNDLE}",
        ],
        cwd=SOURCE,
        check=True,
        timeout=120,
    )
    return BUNDLE.read_bytes()


def shop(intake_url: str, bundle: bytes) -> Flask:
    app = Flask("analytics-next-shop")
    head = f"""<script src="/analytics-next.js"></script>
<script>
  window.analytics = AnalyticsBrowser.load({{writeKey: "{PUBLIC_KEY}", cdnURL: "{intake_url}"}});
  analytics.page();
</script>"""

    @app.get("/analytics-next.js")
    def sdk() -> Response:
        return Response(bundle, mimetype="application/javascript")

    @app.get("/")
    def product() -> str:
        return f"""<!doctype html><html><head><meta charset="utf-8"><title>Mug M1</title>
{head}</head><body><h1>Mug M1</h1>
<button id="add" onclick="analytics.track('Product Added', {{product_id: 'm1', price: 12}})
  .then(function () {{ document.getElementById('ok').textContent = 'added' }})">Add</button>
<form id="lead" onsubmit="event.preventDefault();
  analytics.identify('shopper-2', {{email: this.email.value}});
  analytics.track('Order Completed', {{order_id: 'o-2', revenue: 12}})
    .then(function () {{ document.getElementById('ok').textContent = 'ordered' }})">
  <input id="email" name="email" type="email"><button id="buy">Buy</button></form>
<p id="ok"></p></body></html>"""

    return app


def test_segment_analytics_next_delivers_a_journey_to_intake(
    intake: tuple[Flask, str],  # noqa: F811 - the fixture imported above
    browser: Any,
    scoring_app: Flask,  # noqa: F811 - the fixture imported above
    analytics_next: bytes,
    shop_site: tuple[LateApp, str],
) -> None:
    app, intake_url = intake
    with open_site(shop_site, shop(intake_url, analytics_next)) as shop_url:
        browser.get(f"{shop_url}/?utm_source=bing&utm_medium=cpc")
        browser.find_element("id", "add").click()
        wait_for(lambda: browser.find_element("id", "ok").text == "added", timeout=20)
        browser.find_element("id", "email").send_keys("bo@example.com")
        browser.find_element("id", "buy").click()
        wait_for(lambda: browser.find_element("id", "ok").text == "ordered", timeout=20)
        browser.save_screenshot(str(ARTIFACTS / "browser-analytics-next.png"))
        events = until_ordered(app)
    assert {e.type for e in events} == {"page", "track", "identify"}
    assert all(e.context["library"]["name"] == "analytics.js" for e in events)
    assert all(e.context["funnel"] == {"source_kind": "browser"} for e in events)
    (page,) = [e for e in events if e.type == "page"]
    assert page.context["page"]["path"] == "/"
    assert page.context["campaign"]["source"] == "bing"
    (identify,) = [e for e in events if e.type == "identify"]
    assert (identify.user_id, identify.payload["traits"]["email"]) == (
        "shopper-2",
        "bo@example.com",
    )
    assert len({e.anonymous_id for e in events}) == 1

    result = Feeder(scoring_app)(*events)
    assert result.dead_letters == []
    with scoring_app.extensions[SCORING_STATE].sessions() as session:
        (lead,) = session.query(Lead).filter(Lead.merged_into.is_(None)).all()
    assert lead.email == "bo@example.com" and lead.stage != "customer"

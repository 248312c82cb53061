"""Websites send events straight from the browser: a demo shop on a second localhost
origin pastes intake's snippet; headless Chromium clicks product → add to cart → lead form
→ checkout, and the events arrive at intake (a real HTTP server) with the page, campaign
and consent context, stamped as a browser source's, and become a lead in lead-scoring's
real consumer handler — a lead, not a customer: a browser's public key cannot make
anyone a customer. A page on an origin the source does not allow gets nothing through,
and a page closed right after a click still delivers the click (sendBeacon).
Screenshots under var/test-artifacts/."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from services.lead_scoring.app import create_app as scoring_create_app
from services.lead_scoring.app import init_db as scoring_init_db
from services.lead_scoring.config import ScoringConfig
from services.lead_scoring.models import Lead
from services.lead_scoring.state import STATE as SCORING_STATE
from services.traffic_intake.app import create_app, init_db
from services.traffic_intake.browser import snippet
from services.traffic_intake.config import IntakeConfig
from services.traffic_intake.models import outbox
from services.traffic_intake.state import STATE as INTAKE_STATE
from shared.events import decode
from tests.conftest import wait_for
from tests.e2e.conftest import ARTIFACTS
from tests.helpers import LateApp, open_site, serving
from tests.unit.lead_scoring.conftest import TOKENS, Feeder

pytestmark = pytest.mark.e2e
PUBLIC_KEY = "wk_public_demo_shop_key"


@pytest.fixture
def intake(tmp_path: Path, shop_site: tuple[LateApp, str]) -> Iterator[tuple[Flask, str]]:
    app = create_app(
        IntakeConfig(
            database_url=f"sqlite:///{tmp_path / 'intake.db'}",
            write_keys=("wk_server_secret",),
            browser_write_keys=(PUBLIC_KEY,),
            browser_origins=(shop_site[1],),
            rate_limit_per_second=0,
        )
    )
    init_db(app.extensions[INTAKE_STATE].engine)
    with serving(app) as url:
        yield app, url


@pytest.fixture
def scoring_app(tmp_path: Path) -> Flask:
    app = scoring_create_app(
        ScoringConfig(database_url=f"sqlite:///{tmp_path / 'scoring.db'}", tokens=TOKENS)
    )
    scoring_init_db(app.extensions[SCORING_STATE].engine)
    return app


PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>{snippet}
<style>body{{font:16px system-ui;margin:2rem}} button{{font-size:1rem;padding:.5rem 1rem}}</style>
</head><body><h1>{title}</h1>{body}</body></html>"""


def shop(intake_url: str) -> Flask:
    """The demo shop: product, cart, lead form, checkout. Only funnel.* calls: what a site
    adds next to the pasted snippet."""
    app = Flask("demo-shop")
    head = snippet(PUBLIC_KEY, intake_url)

    def page(title: str, body: str) -> str:
        return PAGE.format(title=title, snippet=head, body=body)

    @app.get("/")
    def product() -> str:
        return page(
            "Kettle K1",
            """<p>A kettle.</p><button id="add" onclick="funnel.track('Product Added',
            {product_id:'k1', name:'Kettle', price:49, category:'kitchen'});
            document.getElementById('added').textContent='In your cart'">Add to cart</button>
            <span id="added"></span> <a id="to-form" href="/contact">Ask us</a>""",
        )

    @app.get("/contact")
    def form() -> str:
        return page(
            "Talk to sales",
            """<form id="lead" onsubmit="event.preventDefault();
              funnel.identify('shopper-1', {email: this.email.value, firstName: 'Ada'});
              funnel.track('Form Submitted', {form: 'contact'});
              setTimeout(function(){location.href='/checkout'}, 300)">
              <input name="email" id="email" type="email" placeholder="you@example.com">
              <button id="send">Send</button></form>""",
        )

    @app.get("/checkout")
    def checkout() -> str:
        return page(
            "Checkout",
            """<button id="buy" onclick="funnel.track('Order Completed',
            {order_id:'o-1', revenue: 49, currency:'EUR'});
            document.getElementById('done').textContent='Thank you'">Place order</button>
            <span id="done"></span>""",
        )

    @app.get("/leave")
    def leave() -> str:
        return page(
            "Last click",
            """<button id="last" onclick="funnel.track('Clicked Before Leaving')">Buy</button>""",
        )

    @app.get("/denied")
    def denied() -> str:
        return page(
            "No analytics",
            """<script>funnel.consent({analytics:false, marketing:false});</script>
            <button id="x" onclick="funnel.identify('secret-user', {email:'hidden@x.co'});
            funnel.track('Clicked Anonymously')">Go</button>""",
        )

    @app.after_request
    def no_cache(response: Any) -> Any:
        response.headers["Cache-Control"] = "no-store"
        return response

    return app


def intake_events(app: Flask) -> list[Any]:
    with app.extensions[INTAKE_STATE].engine.connect() as conn:
        return [decode(v) for v in conn.scalars(select(outbox.c.value).order_by(outbox.c.id))]


def named(events: list[Any], name: str) -> list[Any]:
    return [e for e in events if e.type == "track" and e.payload["event"] == name]


def until_ordered(app: Flask) -> list[Any]:
    """Intake's events, once the journey's order is among them."""
    events = wait_for(
        lambda: (e := intake_events(app)) and named(e, "Order Completed") and e,
        timeout=20,
        message="the order at intake",
    )
    assert isinstance(events, list)
    return events


def test_a_shop_page_sends_the_journey_and_it_becomes_a_lead_not_a_customer(
    intake: tuple[Flask, str],
    browser: Any,
    scoring_app: Flask,
    shop_site: tuple[LateApp, str],
) -> None:
    app, intake_url = intake
    with open_site(shop_site, shop(intake_url)) as shop_url:
        browser.get(f"{shop_url}/?utm_source=google&utm_medium=cpc&utm_campaign=kettles&gclid=g-42")
        wait_for(lambda: browser.execute_script("return !!(window.funnel && funnel.ready)"))
        browser.find_element("id", "add").click()
        browser.save_screenshot(str(ARTIFACTS / "browser-shop-product.png"))
        browser.find_element("id", "to-form").click()
        wait_for(lambda: browser.title == "Talk to sales")
        browser.find_element("id", "email").send_keys("ada@example.com")
        browser.save_screenshot(str(ARTIFACTS / "browser-shop-form.png"))
        browser.find_element("id", "send").click()
        wait_for(lambda: browser.title == "Checkout", message="on to checkout")
        browser.find_element("id", "buy").click()
        browser.save_screenshot(str(ARTIFACTS / "browser-shop-checkout.png"))
        events = until_ordered(app)
    pages = [e for e in events if e.type == "page"]
    assert [p.context["page"]["path"] for p in pages] == ["/", "/contact", "/checkout"]
    first = pages[0]
    assert first.context["page"]["title"] == "Kettle K1"
    assert first.context["page"]["search"].startswith("?utm_source=google")
    assert first.context["campaign"] == {
        "source": "google",
        "medium": "cpc",
        "name": "kettles",
        "gclid": "g-42",
    }
    assert (
        pages[1].context["page"]["referrer"]
        == f"{shop_url}/?utm_source=google&utm_medium=cpc&utm_campaign=kettles&gclid=g-42"
    )
    assert all(e.context["funnel"] == {"source_kind": "browser"} for e in events)
    assert all(e.source == "browser" for e in events)
    assert len({e.anonymous_id for e in events}) == 1  # one visitor across the pages
    (added,) = named(events, "Product Added")
    assert added.payload["properties"]["product_id"] == "k1"
    (identify,) = [e for e in events if e.type == "identify"]
    assert identify.user_id == "shopper-1"
    assert identify.payload["traits"]["email"] == "ada@example.com"
    assert named(events, "Order Completed")[0].user_id == "shopper-1"
    assert len({e.event_id for e in events}) == len(events)

    # lead-scoring's consumer handler: a known lead; the browser order makes no customer.
    feed = Feeder(scoring_app)
    result = feed(*events)
    assert result.dead_letters == []
    with scoring_app.extensions[SCORING_STATE].sessions() as session:
        (lead,) = session.scalars(select(Lead).where(Lead.merged_into.is_(None))).all()
    assert (lead.email, lead.user_id) == ("ada@example.com", "shopper-1")
    assert lead.stage in ("lead", "mql") and lead.stage != "customer"


def test_an_origin_the_source_does_not_allow_gets_nothing_through(
    intake: tuple[Flask, str], browser: Any, other_site: tuple[LateApp, str]
) -> None:
    app, intake_url = intake
    with open_site(other_site, shop(intake_url)) as other:
        browser.get(f"{other}/")
        wait_for(lambda: browser.execute_script("return !!(window.funnel && funnel.ready)"))
        browser.find_element("id", "add").click()
        browser.execute_script("funnel.flush()")
        time.sleep(3)  # what the page would have sent has been sent, and refused
        queued = browser.execute_script("return localStorage.getItem('funnel:queue')")
        browser.save_screenshot(str(ARTIFACTS / "browser-origin-refused.png"))
    assert intake_events(app) == []
    # Intake refused without CORS headers, so the page cannot even read why: to it the
    # events look undelivered (kept, bounded, retried with backoff — and refused again).
    assert queued is not None and "Product Added" in queued


def test_a_page_closed_right_after_a_click_still_delivers_it(
    intake: tuple[Flask, str], browser: Any, shop_site: tuple[LateApp, str]
) -> None:
    app, intake_url = intake
    with open_site(shop_site, shop(intake_url)) as shop_url:
        browser.get(f"{shop_url}/")  # keeps the session alive in the first tab
        browser.switch_to.new_window("tab")
        browser.get(f"{shop_url}/leave")
        wait_for(lambda: browser.execute_script("return !!(window.funnel && funnel.ready)"))
        browser.find_element("id", "last").click()
        browser.close()  # before the one-second batch timer: only the beacon can send it
        browser.switch_to.window(browser.window_handles[0])
        wait_for(
            lambda: named(intake_events(app), "Clicked Before Leaving"),
            timeout=10,
            message="the click sent by the beacon",
        )


def test_with_analytics_denied_nothing_personal_is_sent(
    intake: tuple[Flask, str], browser: Any, shop_site: tuple[LateApp, str]
) -> None:
    app, intake_url = intake
    with open_site(shop_site, shop(intake_url)) as shop_url:
        browser.get(f"{shop_url}/denied?email=ada@example.com")
        wait_for(lambda: browser.execute_script("return !!(window.funnel && funnel.ready)"))
        browser.find_element("id", "x").click()
        browser.execute_script("funnel.flush()")
        events = wait_for(
            lambda: named(intake_events(app), "Clicked Anonymously") and intake_events(app),
            timeout=10,
        )
        stored = browser.execute_script(
            "return [localStorage.getItem('funnel:aid'), localStorage.getItem('funnel:uid'),"
            " document.cookie]"
        )
    text = json.dumps([e.payload for e in events] + [e.context for e in events])
    assert "hidden@x.co" not in text and "secret-user" not in text
    assert "email=ada" not in text  # the URL's query is personal
    assert all(e.user_id is None for e in events)
    assert stored[0] is None and stored[1] is None and "funnel_aid=" not in stored[2]

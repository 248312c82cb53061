"""The demo's journey generator (pure) and its sender against a real intake app on
127.0.0.1 (SQLite, no broker: accepted events wait in the outbox)."""

from __future__ import annotations

import inspect
import json
import re
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from deploy import demo
from deploy.demo import MAX_CALLS_PER_VISITOR, MAX_VISITORS, generate, send
from services.traffic_intake import channels
from services.traffic_intake.channels import classify
from services.traffic_intake.schemas import CALL_SCHEMAS
from shared.broker import free_port
from shared.consent import ANALYTICS, MARKETING, decisions
from shared.limits import MAX_EVENT_BYTES, json_size
from shared.provenance import CONTEXT_KEY, SERVER, source_kind
from tests.helpers import intake_app, serving

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
WRITE_KEY = "demo-unit-write-key"


def known_channels() -> set[str]:
    """Every channel the classifier can answer, read from its source: a channel added
    there fails this test until the demo brings visitors from it."""
    source = inspect.getsource(channels)
    named = set(re.findall(r'TrafficSource\(\s*"([a-z_]+)"', source))
    named |= {kind for kind, _ in channels.CLICK_IDS.values()} - {"social"}
    return named | {"paid_social", "organic_social"}


def first_calls(journeys: demo.Journeys) -> dict[int, demo.Call]:
    first: dict[int, demo.Call] = {}
    for call in journeys.calls:
        first.setdefault(call.visitor, call)
    return first


def test_same_seed_same_calls_and_another_seed_others() -> None:
    a, b = generate(7, 120, NOW), generate(7, 120, NOW)
    assert a == b
    other = generate(8, 120, NOW)
    assert {c.body["messageId"] for c in a.calls}.isdisjoint(
        c.body["messageId"] for c in other.calls
    )


def test_a_visitors_journey_depends_only_on_seed_and_index() -> None:
    small, large = generate(3, 10, NOW), generate(3, 50, NOW)
    assert [c for c in large.calls if c.visitor < 10] == list(small.calls)


def test_bounded_in_count_and_time() -> None:
    journeys = generate(5, 400, NOW, days=7)
    per_visitor = Counter(c.visitor for c in journeys.calls)
    assert max(per_visitor.values()) <= MAX_CALLS_PER_VISITOR
    assert len(journeys.calls) <= 400 * MAX_CALLS_PER_VISITOR
    assert all(
        NOW - timedelta(days=7) <= c.at <= NOW - timedelta(minutes=10) for c in journeys.calls
    )
    assert [c.at for c in journeys.calls] == sorted(c.at for c in journeys.calls)
    with pytest.raises(ValueError):
        generate(1, MAX_VISITORS + 1, NOW)
    with pytest.raises(ValueError):
        generate(1, 10, datetime(2026, 3, 1))  # naive


def test_every_call_is_one_intake_accepts() -> None:
    journeys = generate(11, 200, NOW)
    ids = [c.body["messageId"] for c in journeys.calls]
    assert len(set(ids)) == len(ids)
    for call in journeys.calls:
        assert call.type in ("page", "track", "identify")
        CALL_SCHEMAS[call.type]().load(call.body)  # raises on a bad call
        assert json_size(call.batch_item()) < MAX_EVENT_BYTES
        assert CONTEXT_KEY not in call.body["context"]  # provenance is intake's to stamp


def test_first_touch_covers_every_channel_the_classifier_knows() -> None:
    journeys = generate(1, 300, NOW)
    first = first_calls(journeys)
    by_visitor = {v.index: v for v in journeys.visitors}
    first_touch = {i: classify(call.body["context"]).channel for i, call in first.items()}
    # Each visitor arrives by the channel the journey was made for.
    assert all(first_touch[i] == by_visitor[i].channel for i in first_touch)
    seen = {classify(c.body["context"]).channel for c in journeys.calls}
    assert known_channels() <= seen, known_channels() - seen
    assert known_channels() - {"internal"} <= set(first_touch.values())
    # Click ids and search engines as real traffic brings them.
    urls = " ".join(c.body["context"]["page"]["url"] for c in first.values())
    for click_id in ("gclid", "msclkid", "fbclid", "li_fat_id"):
        assert f"{click_id}=" in urls
    engines = {classify(c.body["context"]).engine for c in first.values()}
    assert {"google", "bing", "duckduckgo", "facebook", "linkedin", "ptt"} <= engines
    landings = {c.body["context"]["page"]["path"] for c in first.values()}
    assert {"/pricing", "/blog/seo-guide"} <= landings and any(
        p.startswith("/products/") for p in landings
    )


def test_journeys_hold_the_whole_funnel() -> None:
    journeys = generate(2, 300, NOW)
    counts = journeys.counts()
    events = Counter(c.event for c in journeys.calls if c.event)
    for name in (
        "Form Submitted",
        "Product Viewed",
        "Product Added",
        "Checkout Started",
        "Order Completed",
    ):
        assert events[name] > 0, name
    assert counts["identified"] > 0 and counts["form_fills"] > 0
    assert counts["abandoned_carts"] > 0 and counts["buyers"] > 0
    assert counts["repeat_buyers"] > 0  # members come back and buy again
    order = next(c for c in journeys.calls if c.event == "Order Completed")
    props = order.body["properties"]
    assert props["products"] and props["currency"] == "USD"
    assert props["revenue"] == pytest.approx(sum(p["price"] for p in props["products"]))


def test_some_visitors_deny_consent_and_denial_is_on_every_call() -> None:
    journeys = generate(4, 300, NOW)
    denied = {v.index for v in journeys.visitors if v.consent == "denied"}
    no_marketing = {v.index for v in journeys.visitors if v.consent == "no_marketing"}
    assert denied and no_marketing
    for call in journeys.calls:
        stated = decisions(call.body["context"], call.body.get("traits"))
        if call.visitor in denied:
            assert stated[ANALYTICS] is False and stated[MARKETING] is False
            assert "userId" not in call.body  # who denies analytics never identifies
        if call.visitor in no_marketing:
            assert stated[MARKETING] is False and stated[ANALYTICS] is True


def test_purchases_only_from_identified_visitors() -> None:
    journeys = generate(6, 300, NOW)
    identified_at: dict[int, datetime] = {}
    orders = 0
    for call in journeys.calls:
        if call.type == "identify":
            identified_at.setdefault(call.visitor, call.at)
            assert call.body["traits"]["email"].endswith(".example")
        if call.event == "Order Completed":
            orders += 1
            assert call.body.get("userId")
            assert identified_at[call.visitor] < call.at
    assert orders == journeys.counts()["orders"] > 0


def test_send_posts_every_call_as_a_server_source(tmp_path: Path) -> None:
    from services.traffic_intake.models import outbox
    from services.traffic_intake.state import STATE

    app = intake_app(tmp_path / "intake.db", WRITE_KEY)
    journeys = generate(9, 25, NOW)
    with serving(app) as url:
        batched = send(journeys.calls, url, WRITE_KEY, batch_size=10, threads=3)
        again = send(journeys.calls[:20], url, WRITE_KEY, batch_size=7)
    assert (batched.accepted, batched.failed, batched.unsent) == (len(journeys.calls), 0, 0)
    assert (again.accepted, again.duplicates) == (0, 20)  # same ids: duplicates
    with app.extensions[STATE].engine.connect() as conn:
        values = [json.loads(v) for v in conn.scalars(select(outbox.c.value))]
    assert len(values) == len(journeys.calls)
    orders = [v for v in values if v["payload"].get("event") == "Order Completed"]
    assert orders and all(source_kind(v["context"]) == SERVER for v in orders)
    # One visitor's events arrive in their own order, whatever the threads did.
    for visitor in {c.visitor for c in journeys.calls}:
        mine = [v for v in values if v["anonymous_id"] == journeys.visitors[visitor].anonymous_id]
        assert [v["occurred_at"] for v in mine] == sorted(v["occurred_at"] for v in mine)


def test_paced_sending_keeps_to_the_rate(tmp_path: Path) -> None:
    app = intake_app(tmp_path / "intake.db", WRITE_KEY)
    calls = generate(10, 10, NOW).calls[:40]
    sent: list[float] = []
    with serving(app) as url:
        started = time.monotonic()
        result = send(calls, url, WRITE_KEY, rate=100, on_sent=lambda c, t: sent.append(t))
    assert result.accepted == 40 and result.requests == 40  # one call per request
    assert time.monotonic() - started >= 39 / 100
    assert max(sent) - min(sent) >= 0.3


def test_send_stops_at_its_deadline(tmp_path: Path) -> None:
    app = intake_app(tmp_path / "intake.db", WRITE_KEY)
    calls = generate(10, 30, NOW).calls
    with serving(app) as url:
        result = send(calls, url, WRITE_KEY, rate=20, max_seconds=0.5)
    assert result.unsent > 0 and result.accepted + result.unsent == len(calls)


def test_refused_write_key_is_a_clear_error(tmp_path: Path) -> None:
    app = intake_app(tmp_path / "intake.db", WRITE_KEY)
    with serving(app) as url, pytest.raises(demo.DemoError, match="refused the write key"):
        send(generate(1, 2, NOW).calls, url, "wrong-key")


def test_command_without_services_fails_with_a_message_not_a_traceback(tmp_path: Path) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(
        demo.main,
        [
            "--visitors",
            "5",
            "--var-dir",
            str(tmp_path),
            *("--intake-url", down, "--scoring-url", down, "--retargeting-url", down),
            *("--write-key", "k", "--sales-token", "s", "--marketing-token", "m"),
        ],
    )
    assert result.exit_code == 1
    assert "traffic-intake is not reachable" in result.output and "make run" in result.output
    assert "Traceback" not in result.output


def test_command_names_missing_credentials(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        demo.main,
        ["--visitors", "5", "--var-dir", str(tmp_path)],
        env={
            "FUNNEL_WRITE_KEY": None,
            "FUNNEL_SALES_TOKEN": None,
            "FUNNEL_MARKETING_TOKEN": None,
            "FUNNEL_VAR_DIR": None,
        },
    )
    assert result.exit_code == 1
    assert "FUNNEL_WRITE_KEY" in result.output and "dev-credentials.json" in result.output


def test_credentials_come_from_make_runs_file(tmp_path: Path) -> None:
    (tmp_path / "dev-credentials.json").write_text(
        json.dumps(
            {"FUNNEL_WRITE_KEY": "w", "FUNNEL_SALES_TOKEN": "s", "FUNNEL_MARKETING_TOKEN": "m"}
        )
    )
    services = demo._services_from(str(tmp_path), None, None, None, None, None, "override")
    assert (services.write_key, services.sales_token, services.marketing_token) == (
        "w",
        "s",
        "override",
    )
    assert services.intake.startswith("http://127.0.0.1:")

"""The members API: who bought, with lifetime value, tier, RFM and product affinity;
filtered and paged."""

from __future__ import annotations

import pytest
from flask import Flask

from services.member_retargeting.models import accounts as accounts_table
from shared import accounts
from tests.helpers import page_login
from tests.unit.member_retargeting.conftest import (
    MARKETING,
    did,
    feed,
    order,
    seed,
    stage,
    state_of,
    work_runs,
)


def test_customers_become_members_with_their_orders(app: Flask) -> None:
    seed(app)
    body = app.test_client().get("/members", headers=MARKETING).json
    assert body["total"] == 1
    [member] = body["items"]
    assert (member["lead_id"], member["orders"], member["revenue"]) == ("L2", 2, "150.50")
    assert member["tier"] == "member"


def test_members_show_tier_rfm_and_affinity_and_filter(app: Flask) -> None:
    feed(
        app,
        stage("G", "lead", email="g@x.co", user="g"),
        stage("S", "lead", email="s@x.co", user="s"),
        stage("N", "lead", email="n@x.co", user="n"),
        did("g", "Product Viewed", product_id="p1", name="Lamp", category="lights"),
        order("g", 2500, products=[{"product_id": "p2", "name": "Sofa", "category": "seats"}]),
        order("s", 600),
        order("n", 20),
    )
    work_runs(app)  # the daily pass scores RFM
    client = app.test_client()
    body = client.get("/members", headers=MARKETING).json
    by_id = {m["lead_id"]: m for m in body["items"]}
    assert {k: m["tier"] for k, m in by_id.items()} == {"G": "gold", "S": "silver", "N": "member"}
    assert all(
        m["rfm_group"] and set(m["rfm"]) == {"recency", "frequency", "monetary"}
        for m in by_id.values()
    )
    assert by_id["G"]["rfm"]["monetary"] > by_id["N"]["rfm"]["monetary"]
    assert by_id["G"]["affinity"]["products"][0] == ["Sofa", 5]
    assert ["Lamp", 1] in by_id["G"]["affinity"]["products"]
    assert by_id["S"]["affinity"] is None
    gold = client.get("/members?tier=gold", headers=MARKETING).json
    assert [m["lead_id"] for m in gold["items"]] == ["G"]
    group = by_id["N"]["rfm_group"]
    grouped = client.get(f"/members?rfm_group={group}", headers=MARKETING).json["items"]
    assert "N" in [m["lead_id"] for m in grouped]
    page = client.get("/members?page=2&page_size=2", headers=MARKETING).json
    assert (page["total"], len(page["items"]), page["page"]) == (3, 1, 2)
    bad = client.get("/members?page_size=1000&colour=red", headers=MARKETING)
    assert bad.status_code == 422
    assert {"page_size", "colour"} <= set(bad.json["error"]["fields"])


@pytest.mark.parametrize("query", ["tier=a%00b", "rfm_group=%00", "tier=" + "g" * 41])
def test_a_hostile_filter_is_a_422(app: Flask, query: str) -> None:
    """Regression (review finding 7): a NUL in a filter reached PostgreSQL (a 500)."""
    response = app.test_client().get(f"/members?{query}", headers=MARKETING)
    assert response.status_code == 422 and set(response.json["error"]["fields"]) <= {
        "tier",
        "rfm_group",
    }


def test_an_empty_filter_is_no_filter(app: Flask) -> None:
    response = app.test_client().get("/members?tier=&rfm_group=", headers=MARKETING)
    assert response.status_code == 200


def test_emails_are_masked_unless_the_account_is_granted_pii(app: Flask) -> None:
    """The shared marketing token and a marketing account without the grant see masked
    e-mails; an account granted PII sees them (API and pages alike)."""
    seed(app)
    engine = state_of(app).engine
    with engine.begin() as conn:
        _, plain_token = accounts.create(
            conn, accounts_table, name="P", email="p@m.co", role="marketing", pii=True, by="t"
        )
        _, masked_token = accounts.create(
            conn, accounts_table, name="M", email="m@m.co", role="marketing", pii=False, by="t"
        )
    client = app.test_client()

    def emails(headers: dict[str, str]) -> list[str]:
        return [m["email"] for m in client.get("/members", headers=headers).json["items"]]

    assert emails(MARKETING) == ["b***@x***.co"]
    assert emails({"Authorization": f"Bearer {masked_token}"}) == ["b***@x***.co"]
    assert emails({"Authorization": f"Bearer {plain_token}"}) == ["buyer@x.co"]
    granted = app.test_client()
    page_login(granted, plain_token)
    assert "buyer@x.co" in granted.get("/app/members").text
    masked = app.test_client()
    page_login(masked, masked_token)
    assert "buyer@x.co" not in masked.get("/app/members").text
    with engine.begin() as conn:  # revoked: the page session ends
        accounts.revoke(conn, accounts_table, 1)
    assert granted.get("/app/members").status_code == 302

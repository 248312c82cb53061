"""The public endpoints of message links through Flask's test client: a GET of the
unsubscribe page changes nothing, the POST unsubscribes every identifier of the person
(once), tracked clicks redirect only to the URL their token signs, the open pixel always
answers, and the next campaign run skips whoever left. SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from itsdangerous import URLSafeSerializer
from sqlalchemy import func, select

from services.member_retargeting.delivery.links import CLICK, OPEN, UNSUBSCRIBE, Link, Links
from services.member_retargeting.models import (
    Consent,
    Contact,
    ContactIdentity,
    DeliveryOutcome,
    Dispatch,
    Suppression,
)
from shared.topics import DELIVERY, PRIVACY
from tests.integration.delivery_helpers import populate, run_campaign
from tests.unit.member_retargeting.conftest import published, state_of

BODY = '<p>Hi {{ first_name }}: <a href="https://shop.example/new?x=1">see it</a></p>'
TARGET = "https://shop.example/new?x=1"


def sent(app: Flask, campaign: dict[str, Any]) -> dict[str, Dispatch]:
    """The campaign's dispatches by person."""
    with state_of(app).sessions() as session:
        rows = session.scalars(select(Dispatch).where(Dispatch.campaign_id == campaign["id"]))
        return {row.contact_id: row for row in rows}


def links(app: Flask) -> Links:
    config = state_of(app).config
    return Links(config.link_keys, config.delivery.public_url)


def token(app: Flask, kind: str, dispatch: Dispatch, url: str | None = None) -> str:
    assert dispatch.event_id is not None
    return links(app).token(kind, Link(dispatch.event_id, dispatch.contact_id, url))


def count(app: Flask, model: Any, *where: Any) -> int:
    with state_of(app).sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def statuses(app: Flask, status: str) -> list[Any]:
    return [e for e in published(app, DELIVERY) if e.payload["status"] == status]


@pytest.fixture
def campaign(app: Flask) -> dict[str, Any]:
    populate(app, 3)
    campaign = run_campaign(app, "spring", BODY)
    assert {d.status for d in sent(app, campaign).values()} == {"sent"}
    return campaign


def test_the_page_asks_and_the_post_unsubscribes_every_identifier_once(
    app: Flask, campaign: dict[str, Any]
) -> None:
    dispatch = sent(app, campaign)["P00000"]
    with state_of(app).sessions.begin() as session:
        session.add(ContactIdentity(kind="anonymous_id", value="anon-0", lead_id="P00000"))
        key = session.get(Contact, "P00000").email_key
    client = app.test_client()
    tok = token(app, UNSUBSCRIBE, dispatch)

    page = client.get(f"/u/{tok}")
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert '<form method="post"' in page.text and f"/u/{tok}" in page.text
    assert count(app, Consent, Consent.source == "unsubscribe") == 0  # a GET never unsubscribes
    assert count(app, Suppression) == 0
    assert published(app, PRIVACY) == [] and statuses(app, "unsubscribed") == []

    done = client.post(f"/u/{tok}")
    assert done.status_code == 200 and "You are unsubscribed" in done.text
    with state_of(app).sessions() as session:
        denials = session.scalars(select(Consent).where(Consent.source == "unsubscribe")).all()
        suppressions = session.scalars(select(Suppression)).all()
    assert sorted((c.kind, c.value) for c in denials) == [
        ("anonymous_id", "anon-0"),
        ("user_id", "u0"),
    ]
    assert {(c.purpose, c.granted) for c in denials} == {("marketing", False)}
    assert [(s.value_hash, s.reason) for s in suppressions] == [(key, "unsubscribed")]
    changed = published(app, PRIVACY)
    assert [(e.type, e.payload["lead_id"], e.payload["granted"]) for e in changed] == [
        ("consent.changed", "P00000", False)
    ]
    left = statuses(app, "unsubscribed")
    assert [(e.payload["dispatch_id"], e.payload["contact_id"]) for e in left] == [
        (dispatch.event_id, "P00000")
    ]

    # Pressing again (or the mail client's one-click POST) adds nothing.
    again = client.post(f"/u/{tok}", data={"List-Unsubscribe": "One-Click"})
    assert again.status_code == 200
    assert count(app, Consent, Consent.source == "unsubscribe") == 2
    assert count(app, Suppression) == 1
    assert len(published(app, PRIVACY)) == 1 and len(statuses(app, "unsubscribed")) == 1


def test_a_forged_or_other_kind_token_is_a_404_page(app: Flask, campaign: dict[str, Any]) -> None:
    dispatch = sent(app, campaign)["P00001"]
    client = app.test_client()
    good = token(app, UNSUBSCRIBE, dispatch)
    forged = Links(("not-the-key",), "http://x").token(
        UNSUBSCRIBE, Link(str(dispatch.event_id), "P00001")
    )
    for response in (
        client.get(f"/u/{forged}"),
        client.post(f"/u/{forged}"),
        client.post(f"/u/{good[:-2]}xx"),
        client.post(f"/u/{token(app, OPEN, dispatch)}"),  # an open token is no unsubscribe
        client.get(f"/c/{good}"),  # nor is an unsubscribe token a click
    ):
        assert response.status_code == 404
        assert response.mimetype == "text/html" and "Link not valid" in response.text
        assert response.get_json(silent=True) is None
    assert count(app, Consent, Consent.source == "unsubscribe") == 0
    assert count(app, Suppression) == 0 and published(app, PRIVACY) == []


def test_a_click_redirects_to_its_signed_url_and_is_reported_once(
    app: Flask, campaign: dict[str, Any]
) -> None:
    dispatch = sent(app, campaign)["P00002"]
    client = app.test_client()
    tok = token(app, CLICK, dispatch, TARGET)
    first = client.get(f"/c/{tok}")
    assert first.status_code == 302 and first.headers["Location"] == TARGET
    assert client.get(f"/c/{tok}").status_code == 302  # a bot following it again
    clicks = statuses(app, "clicked")
    assert [(e.payload["dispatch_id"], e.payload["url"]) for e in clicks] == [
        (dispatch.event_id, TARGET)
    ]
    other = client.get(f"/c/{token(app, CLICK, dispatch, 'https://shop.example/sale')}")
    assert other.headers["Location"] == "https://shop.example/sale"
    assert len(statuses(app, "clicked")) == 2  # another link is another click


def test_no_click_to_another_url_can_be_made_from_a_token(
    app: Flask, campaign: dict[str, Any]
) -> None:
    dispatch = sent(app, campaign)["P00002"]
    client = app.test_client()
    unsub = token(app, UNSUBSCRIBE, dispatch)
    signature = unsub.rsplit(".", 1)[1]
    evil = URLSafeSerializer("x").dump_payload(  # same data plus a URL, old signature
        [dispatch.event_id, dispatch.contact_id, "https://evil.example/"]
    )
    click = token(app, CLICK, dispatch, TARGET)
    swapped = evil.decode() + "." + click.rsplit(".", 1)[1]
    for bad in (unsub, f"{evil.decode()}.{signature}", swapped):
        response = client.get(f"/c/{bad}")
        assert response.status_code == 404 and "Location" not in response.headers
    assert statuses(app, "clicked") == []


def test_the_open_pixel_is_a_gif_that_records_one_open(
    app: Flask, campaign: dict[str, Any]
) -> None:
    dispatch = sent(app, campaign)["P00001"]
    client = app.test_client()
    tok = token(app, OPEN, dispatch)
    for _ in range(3):
        pixel = client.get(f"/o/{tok}")
        assert pixel.status_code == 200 and pixel.mimetype == "image/gif"
        assert pixel.data.startswith(b"GIF89a") and pixel.headers["Cache-Control"] == "no-store"
    opens = statuses(app, "opened")
    assert [(e.payload["dispatch_id"], e.payload["contact_id"]) for e in opens] == [
        (dispatch.event_id, "P00001")
    ]
    for bad in (f"{tok[:-2]}xx", token(app, UNSUBSCRIBE, dispatch), "nonsense"):
        pixel = client.get(f"/o/{bad}")
        assert pixel.status_code == 200 and pixel.mimetype == "image/gif"
    assert len(statuses(app, "opened")) == 1
    assert count(app, DeliveryOutcome) == 0  # the consumer applies them, not the endpoint


def test_unsubscribing_a_merged_contact_withdraws_the_one_it_became(
    app: Flask, campaign: dict[str, Any]
) -> None:
    dispatch = sent(app, campaign)["P00001"]
    with state_of(app).sessions.begin() as session:
        session.get(Contact, "P00001").merged_into = "P00002"
        became = session.get(Contact, "P00002").email_key
    response = app.test_client().post(f"/u/{token(app, UNSUBSCRIBE, dispatch)}")
    assert response.status_code == 200
    with state_of(app).sessions() as session:
        denials = session.scalars(select(Consent).where(Consent.source == "unsubscribe")).all()
        hashes = session.scalars(select(Suppression.value_hash)).all()
    assert [(c.kind, c.value, c.granted) for c in denials] == [("user_id", "u2", False)]
    assert hashes == [became]
    assert [e.payload["lead_id"] for e in published(app, PRIVACY)] == ["P00002"]


def test_the_next_run_skips_who_unsubscribed(app: Flask, campaign: dict[str, Any]) -> None:
    dispatch = sent(app, campaign)["P00000"]
    assert app.test_client().post(f"/u/{token(app, UNSUBSCRIBE, dispatch)}").status_code == 200
    later = run_campaign(app, "summer", BODY)
    rows = sent(app, later)
    assert (rows["P00000"].status, rows["P00000"].skip_reason) == ("skipped", "unsubscribed")
    assert rows["P00000"].event_id is None
    # The others are held back by the default cap of one a day, not by the unsubscribe.
    assert {rows[p].skip_reason for p in ("P00001", "P00002")} == {"frequency_cap"}

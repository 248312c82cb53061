"""Delivery statuses into campaign reports, through the real runner batch on SQLite and
PostgreSQL: the newest of sent/failed/bounced wins (a late older one does not), a bounce
suppresses the address, the first open and click are kept and clicks counted, the first
click is a behaviour of the person, unknown dispatches change nothing, and the report's
delivery counts add up."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from services.member_retargeting.delivery.status import delivery_status
from services.member_retargeting.models import (
    Behaviour,
    Contact,
    ContactIdentity,
    DeliveryOutcome,
    Dispatch,
    Suppression,
)
from services.member_retargeting.processing.delivery import EMAIL_LINK_CLICKED
from shared.db import utcnow
from shared.events import Envelope
from shared.topics import DELIVERY
from tests.integration.delivery_helpers import populate, run_campaign
from tests.unit.member_retargeting.conftest import MARKETING, feed, state_of

T = utcnow().replace(microsecond=0) - timedelta(hours=1)
A, B = "https://shop.example/a", "https://shop.example/b"


def minutes(n: int) -> datetime:
    return T + timedelta(minutes=n)


@pytest.fixture
def sent(app: Flask) -> dict[str, Dispatch]:
    """Six people reached by one e-mail campaign: their dispatches by person."""
    populate(app, 6)
    campaign = run_campaign(app, "spring", "<p>Hi {{ first_name }}</p>")
    with state_of(app).sessions() as session:
        rows = session.scalars(select(Dispatch).where(Dispatch.campaign_id == campaign["id"]))
        by_person = {row.contact_id: row for row in rows}
    assert len(by_person) == 6 and {d.status for d in by_person.values()} == {"sent"}
    return by_person


def status(
    dispatch: Dispatch, what: str, at: datetime, *, dispatch_id: str | None = None, **kw: Any
) -> tuple[str, Envelope]:
    payload = {
        "campaign_id": dispatch.campaign_id,
        "run_id": dispatch.run_id,
        "contact_id": dispatch.contact_id,
        "channel": dispatch.channel,
    }
    event_id = dispatch_id or dispatch.event_id
    assert event_id is not None
    return DELIVERY, delivery_status(event_id, payload, what, at, **kw).envelope


def outcome(app: Flask, dispatch: Dispatch) -> DeliveryOutcome:
    with state_of(app).sessions() as session:
        row = session.get(DeliveryOutcome, dispatch.event_id)
        assert row is not None
        return row


def count(app: Flask, model: Any, *where: Any) -> int:
    with state_of(app).sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def email_key(app: Flask, lead_id: str) -> str | None:
    with state_of(app).sessions() as session:
        return session.scalar(select(Contact.email_key).where(Contact.lead_id == lead_id))


def test_a_later_bounce_wins_and_suppresses_the_address(
    app: Flask, sent: dict[str, Dispatch]
) -> None:
    d = sent["P00000"]
    feed(app, status(d, "sent", minutes(0)))
    assert (outcome(app, d).status, outcome(app, d).status_at) == ("sent", minutes(0))
    reply = "550 5.1.1 <ada@example.com>: no such user"
    feed(app, status(d, "bounced", minutes(5), detail=reply))
    row = outcome(app, d)
    # Only the reply's codes are kept: its text may quote the address.
    assert (row.status, row.status_at, row.detail) == ("bounced", minutes(5), "550 5.1.1")
    assert (row.campaign_id, row.contact_id, row.channel) == (d.campaign_id, "P00000", "email")
    with state_of(app).sessions() as session:
        suppressions = session.scalars(select(Suppression)).all()
    assert [(s.value_hash, s.kind, s.reason) for s in suppressions] == [
        (email_key(app, "P00000"), "email", "bounced")
    ]

    # A "sent" older than the bounce, arriving after it, does not undo it.
    feed(app, status(d, "sent", minutes(1), occurrence="late"))
    assert (outcome(app, d).status, outcome(app, d).status_at) == ("bounced", minutes(5))
    # A newer one (a later retried send) is the newest news.
    feed(app, status(d, "sent", minutes(9), occurrence="retry"))
    assert (outcome(app, d).status, outcome(app, d).status_at) == ("sent", minutes(9))
    assert count(app, Suppression) == 1  # the bounce's suppression stays, once


def test_sent_and_bounced_in_one_batch_are_one_row(app: Flask, sent: dict[str, Dispatch]) -> None:
    d = sent["P00001"]
    feed(app, status(d, "bounced", minutes(3)), status(d, "sent", minutes(2)))
    assert (outcome(app, d).status, outcome(app, d).status_at) == ("bounced", minutes(3))
    assert count(app, DeliveryOutcome) == 1
    assert count(app, Suppression, Suppression.reason == "bounced") == 1


def test_first_open_and_click_are_kept_and_clicks_counted(
    app: Flask, sent: dict[str, Dispatch]
) -> None:
    d = sent["P00002"]
    with state_of(app).sessions.begin() as session:
        session.add(ContactIdentity(kind="anonymous_id", value="anon-2", lead_id="P00002"))
    feed(
        app,
        status(d, "opened", minutes(1)),
        status(d, "clicked", minutes(2), url=A, occurrence=A),
        status(d, "opened", minutes(4), occurrence="again"),
    )
    feed(
        app,
        status(d, "clicked", minutes(6), url=B, occurrence=B),
        status(d, "clicked", minutes(2), url=A, occurrence=A),  # redelivered: same event
    )
    row = outcome(app, d)
    assert (row.opened_at, row.clicked_at, row.clicks) == (minutes(1), minutes(2), 2)
    assert row.status is None and row.unsubscribed_at is None  # no delivery status yet
    with state_of(app).sessions() as session:
        clicked = session.scalars(
            select(Behaviour).where(Behaviour.event == EMAIL_LINK_CLICKED)
        ).all()
    assert [(b.kind, b.value, b.at) for b in clicked] == [("user_id", "u2", minutes(2))]
    assert count(app, Suppression) == 0


def test_statuses_of_an_unknown_dispatch_change_nothing(
    app: Flask, sent: dict[str, Dispatch]
) -> None:
    d = sent["P00003"]
    feed(
        app,
        *(
            status(d, what, minutes(1), dispatch_id="f" * 32, url=A if what == "clicked" else None)
            for what in ("sent", "bounced", "opened", "clicked", "unsubscribed")
        ),
    )
    assert count(app, DeliveryOutcome) == 0
    assert count(app, Suppression) == 0
    assert count(app, Behaviour, Behaviour.event == EMAIL_LINK_CLICKED) == 0


def test_the_report_counts_what_became_of_the_messages(
    app: Flask, sent: dict[str, Dispatch]
) -> None:
    d = [sent[f"P{i:05}"] for i in range(6)]
    feed(
        app,
        status(d[0], "sent", minutes(0)),
        status(d[0], "opened", minutes(1)),
        status(d[0], "clicked", minutes(2), url=A, occurrence=A),
        status(d[0], "clicked", minutes(3), url=B, occurrence=B),
        status(d[1], "failed", minutes(0), detail="gave up"),
        status(d[2], "sent", minutes(0)),
        status(d[2], "bounced", minutes(1)),
        status(d[3], "opened", minutes(4)),  # opened before its "sent" arrived
        status(d[4], "sent", minutes(0)),
        status(d[4], "delivered", minutes(1)),  # a receipt: still "sent", and delivered
        status(d[4], "unsubscribed", minutes(5)),
        status(d[4], "unsubscribed", minutes(6), occurrence="twice"),
    )
    campaign_id = d[0].campaign_id
    body = app.test_client().get(f"/campaigns/{campaign_id}/report", headers=MARKETING).json
    assert body is not None
    assert body["dispatched_count"] == 6
    assert body["delivery"] == {
        "sent": 2,
        "delivered": 1,
        "failed": 1,
        "bounced": 1,
        "pending": 2,  # d[3] (opened, no status) and d[5] (nothing yet)
        "suppressed": 0,
        "opened": 2,
        "clicked": 1,
        "unsubscribed": 1,
    }
    assert outcome(app, d[0]).clicks == 2

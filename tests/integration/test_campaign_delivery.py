"""Campaigns reach people: a campaign to 1,000 people — 100 without marketing consent, 50
suppressed — goes through the real API, scheduler pass, broker, dispatcher and a real SMTP
server (the development mail sink). Exactly 850 e-mails arrive, each with working
one-click unsubscribe headers; pressing one unsubscribes that person everywhere, and the
next campaign skips them with the reason. Delivery statuses travel back over the broker
into the campaign report. SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from flask import Flask
from sqlalchemy import func, select

from deploy.mailsink import MailSink
from services.member_retargeting.app import create_app, init_db
from services.member_retargeting.config import DeliveryConfig, RetargetingConfig
from services.member_retargeting.delivery.dispatcher import Dispatcher
from services.member_retargeting.delivery.smtp import SmtpSettings
from services.member_retargeting.models import Consent, Delivery, Dispatch, Suppression
from services.member_retargeting.state import STATE as RETARGETING_STATE
from shared.config import KafkaConfig
from shared.events import decode
from shared.topics import DELIVERY, PRIVACY
from tests.conftest import wait_for
from tests.helpers import TopicReader
from tests.integration.delivery_helpers import (
    dispatcher_consumer,
    email_of,
    populate,
    relay,
    run_campaign,
)
from tests.unit.member_retargeting.conftest import MARKETING, TOKENS, feed, published

pytestmark = pytest.mark.kafka
PEOPLE = 1000
NO_CONSENT, SUPPRESSED = range(0, 100), range(100, 150)
BODY = '<p>New this week, {{ first_name }}: <a href="https://shop.example/new?x=1">see it</a></p>'


@pytest.fixture
def sink() -> Iterator[MailSink]:
    sink = MailSink(port=0, keep=5000, refuse=[email_of(999)]).start()
    yield sink
    sink.stop()


def make_app(database_url: str, kafka: KafkaConfig, sink: MailSink) -> Flask:
    config = RetargetingConfig(
        database_url=database_url,
        tokens=TOKENS,
        kafka=kafka,
        run_chunk=250,
        cap_per_day=5,  # two campaigns in one day: the frequency cap is not under test here
        delivery=DeliveryConfig(
            smtp=SmtpSettings(host=sink.host, port=sink.port),
            sender_address="news@shop.example",
            public_url="https://mail.shop.example",
            rates={"email": 100_000.0},
            poll_seconds=0.02,
        ),
    )
    app = create_app(config)
    init_db(app.extensions[RETARGETING_STATE].engine)
    return app


def send_all(app: Flask, until: int, sink: MailSink) -> None:
    state = app.extensions[RETARGETING_STATE]
    dispatcher = Dispatcher(state.sessions, state.config)
    deadline = time.monotonic() + 120
    settled = 0
    while time.monotonic() < deadline:
        worked = dispatcher.run_once()
        settled = settled + 1 if worked == 0 and sink.accepted >= until else 0
        if settled >= 10:  # nothing more to send, ten passes in a row
            break
        if worked == 0:
            time.sleep(0.05)
    dispatcher.mailer.close()


def test_a_campaign_reaches_exactly_the_people_it_may_and_one_click_unsubscribes(
    database_url: str, own_broker: KafkaConfig, sink: MailSink
) -> None:
    app = make_app(database_url, own_broker, sink)
    populate(app, PEOPLE, no_consent=NO_CONSENT, suppressed=SUPPRESSED, tracked=lambda i: i % 2)
    campaign = run_campaign(app, "new this week", BODY)
    assert relay(app, own_broker) == PEOPLE - len(NO_CONSENT) - len(SUPPRESSED)

    with dispatcher_consumer(app.extensions[RETARGETING_STATE].config):
        engine = app.extensions[RETARGETING_STATE].engine

        def queued() -> int:
            with engine.connect() as conn:
                return conn.scalar(select(func.count()).select_from(Delivery)) or 0

        wait_for(lambda: queued() == 850, timeout=60, message="850 dispatches in the store")
        send_all(app, 849, sink)

        # Exactly 849 e-mails accepted (one mailbox does not exist: it bounced), each once.
        caught = sink.messages()
        per_address = Counter(r for c in caught for r in c.recipients)
        expected = {
            email_of(i) for i in range(PEOPLE) if i not in NO_CONSENT and i not in SUPPRESSED
        }
        assert set(per_address) == expected - {email_of(999)}
        assert set(per_address.values()) == {1}
        for c in caught:
            m = c.message
            assert m["List-Unsubscribe"].startswith("<https://mail.shop.example/u/")
            assert m["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
            # On the wire as it is (never RFC 2047-encoded: clients would not decode it).
            assert b"\r\nList-Unsubscribe: <https://mail.shop.example/u/" in c.raw
            html = m.get_body(("html",)).get_content()
            number = int(c.recipients[0][1:].split("@")[0])
            assert f"Person{number}" in html and "Unsubscribe" in html
            # Opens and clicks are tracked only for people who allowed analytics.
            assert ("mail.shop.example/o/" in html) is bool(number % 2)
            assert ("https://shop.example/new" in html) is not bool(number % 2)

        # Statuses come back over the broker: 849 sent, one bounced.
        reader = TopicReader(own_broker, DELIVERY)
        try:
            statuses = reader.wait(lambda vs: len(vs) >= 850, timeout=60)
        finally:
            reader.close()
    by_status = Counter(v["payload"]["status"] for v in statuses)
    assert by_status == {"sent": 849, "bounced": 1}

    # The person presses the one-click button in their mail client (RFC 8058): a POST.
    client = app.test_client()
    chosen = next(c for c in caught if c.recipients == (email_of(200),))
    link = urlsplit(chosen.message["List-Unsubscribe"].strip("<>"))
    other = next(c for c in caught if c.recipients == (email_of(201),))
    other_link = urlsplit(other.message["List-Unsubscribe"].strip("<>"))
    page = client.get(other_link.path)  # a GET (a mail scanner) shows the page, changes nothing
    assert page.status_code == 200 and b"Nothing changes until you press" in page.data
    done = client.post(link.path, data={"List-Unsubscribe": "One-Click"})
    assert done.status_code == 200 and b"You are unsubscribed" in done.data
    assert client.post(link.path, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    assert client.post(link.path[:-3] + "xyz").status_code == 404  # a forged token

    with engine.connect() as conn:
        withdrawn = conn.scalars(
            select(Consent.value).where(Consent.source == "unsubscribe", Consent.granted.is_(False))
        ).all()
        reasons = dict(
            conn.execute(
                select(Suppression.reason, func.count()).group_by(Suppression.reason)
            ).all()
        )
    assert withdrawn == ["u200"]
    assert reasons == {"complained": 50, "unsubscribed": 1}
    changed = [e for e in published(app, PRIVACY) if e.type == "consent.changed"]
    assert [(e.payload["lead_id"], e.payload["granted"]) for e in changed] == [("P00200", False)]

    # The statuses into the report (the consumer's handler, as its process applies them).
    feed(app, *((DELIVERY, decode(json.dumps(v).encode())) for v in statuses))
    feed(app, *((DELIVERY, e) for e in published(app, DELIVERY)))
    report = client.get(f"/campaigns/{campaign['id']}/report", headers=MARKETING).json
    assert report["dispatched_count"] == 850
    assert report["delivery"] == {
        "sent": 849,
        "delivered": 0,  # e-mail has no receipts
        "bounced": 1,
        "failed": 0,
        "pending": 0,
        "suppressed": 0,
        "opened": 0,
        "clicked": 0,
        "unsubscribed": 1,
    }
    with engine.connect() as conn:
        bounced = conn.scalar(select(func.count()).where(Suppression.reason == "bounced"))
    assert bounced == 1  # a hard bounce suppresses the address

    # The next campaign skips the person who left, with the reason, and the bounced one.
    second = run_campaign(app, "next week", BODY)
    with engine.connect() as conn:
        skipped = dict(
            conn.execute(
                select(Dispatch.contact_id, Dispatch.skip_reason).where(
                    Dispatch.campaign_id == second["id"], Dispatch.status == "skipped"
                )
            ).all()
        )
    assert skipped["P00200"] == "unsubscribed"
    assert skipped["P00999"] == "suppressed"
    assert sum(1 for r in skipped.values() if r == "no_consent") == len(NO_CONSENT)
    report = client.get(f"/campaigns/{second['id']}/report", headers=MARKETING).json
    assert report["dispatched_count"] == 848

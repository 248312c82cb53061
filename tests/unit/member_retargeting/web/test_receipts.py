"""``POST /delivery/receipts`` on SQLite and PostgreSQL: signed SMS/WhatsApp receipts
become delivery statuses the campaign report counts; anything unsigned, stale, unknown or
malformed is refused with the JSON error naming why, and nothing is recorded."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from sqlalchemy import func, select, update

from services.member_retargeting.app import create_app, init_db
from services.member_retargeting.config import RetargetingConfig
from services.member_retargeting.delivery.queue import queue_dispatch
from services.member_retargeting.delivery.receipts import RECEIPT_STATUSES
from services.member_retargeting.delivery.status import SENT, delivery_status, dispatch_payload
from services.member_retargeting.delivery.webhook import SIGNATURE_HEADER, signature
from services.member_retargeting.models import Delivery, outbox
from shared.db import utcnow
from shared.topics import DELIVERY, DISPATCH
from tests.helpers import page_login
from tests.integration.delivery_helpers import populate, run_campaign
from tests.unit.member_retargeting.conftest import MARKETING, TOKENS, feed, published, state_of

SECRET = "receipt-secret-for-tests"
PATH = "/delivery/receipts"


@pytest.fixture
def app(database_url: str) -> Flask:
    config = RetargetingConfig(database_url=database_url, tokens=TOKENS, run_chunk=50)
    delivery = replace(config.delivery, webhook_url="http://127.0.0.1:9/sms", webhook_secret=SECRET)
    app = create_app(replace(config, delivery=delivery))
    init_db(state_of(app).engine)
    return app


def queued(
    app: Flask, channel: str, name: str, status: str = "sent"
) -> tuple[dict[str, Any], dict[str, str]]:
    """A campaign run on ``channel`` to everyone populated, its dispatches taken into the
    dispatcher's store with ``status`` (sent: the bridge took them); returns it and the
    dispatch id by person."""
    campaign = run_campaign(app, name, "Hi {{ first_name }}", channel=channel)
    dispatches = [e for e in published(app, DISPATCH) if e.payload["campaign_id"] == campaign["id"]]
    with state_of(app).sessions.begin() as session:
        for event in dispatches:
            queue_dispatch(event, session)
        session.execute(
            update(Delivery)
            .where(Delivery.campaign_id == campaign["id"])
            .values(status=status, attempts=1)
        )
    return campaign, {e.payload["contact_id"]: e.event_id for e in dispatches}


def post(
    app: Flask, body: Any, *, secret: str = SECRET, skew_s: float = 0, signed: bool = True
) -> Any:
    """POST ``body`` signed with ``secret``, timestamped ``skew_s`` from now (taken here,
    when the request is made: never at collection, minutes earlier)."""
    raw = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if signed:
        headers[SIGNATURE_HEADER] = signature(secret, int(time.time() + skew_s), raw)
    return app.test_client().post(PATH, data=raw, headers=headers)


def outbox_size(app: Flask) -> int:
    with state_of(app).engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(outbox)) or 0)


def test_receipts_become_the_reports_delivered_failed_and_opened(app: Flask) -> None:
    populate(app, 3, phones=True, tracked=lambda i: i == 0)
    campaign, ids = queued(app, "whatsapp", "whatsapp-spring")
    assert len(ids) == 3
    # The dispatcher handed all three to the bridge a minute ago.
    with state_of(app).sessions() as session:
        earlier = utcnow() - timedelta(minutes=1)
        sent = [
            delivery_status(d.dispatch_id, dispatch_payload(d), SENT, earlier)
            for d in session.scalars(select(Delivery))
        ]

    def counted(receipt: str, recorded: str) -> float:
        labels = {"channel": "whatsapp", "receipt": receipt, "recorded": recorded}
        return REGISTRY.get_sample_value("funnel_delivery_receipts_total", labels) or 0.0

    delivered_before = counted("delivered", "delivered")
    answers = [
        post(app, {"id": ids["P00000"], "status": "delivered"}),
        post(app, {"id": ids["P00000"], "status": "read"}),  # allowed tracking: an open
        post(app, {"id": ids["P00001"], "status": "undelivered", "code": "30003"}),
        post(app, {"id": ids["P00002"], "status": "queued"}),  # nothing new
        post(app, {"id": ids["P00002"], "status": "read"}),  # no tracking: not an open
    ]
    assert [a.status_code for a in answers] == [200] * 5, [a.json for a in answers]
    assert counted("delivered", "delivered") == delivered_before + 1  # for the operators
    assert [a.json["recorded"] for a in answers] == ["delivered", "opened", "failed", None, None]
    # The bridge retries a receipt it did not hear answered: nothing more is recorded.
    before = outbox_size(app)
    assert post(app, {"id": ids["P00000"], "status": "delivered"}).status_code == 200
    assert outbox_size(app) == before

    receipts = [e for e in published(app, DELIVERY)]
    assert {e.payload["status"] for e in receipts} == {"delivered", "opened", "failed"}
    (failed,) = [e for e in receipts if e.payload["status"] == "failed"]
    assert failed.payload["detail"] == "receipt undelivered 30003"
    feed(app, *((DELIVERY, e) for e in [*(o.envelope for o in sent), *receipts]))
    report = app.test_client().get(f"/campaigns/{campaign['id']}/report", headers=MARKETING)
    delivery = report.json["delivery"]
    # P00001's "sent" is corrected by its later receipt; the others stay sent.
    assert {k: delivery[k] for k in ("sent", "delivered", "failed", "opened")} == {
        "sent": 2,
        "delivered": 1,
        "failed": 1,
        "opened": 1,
    }
    pages = app.test_client()
    page_login(pages, "marketing-t")
    page = pages.get(f"/app/campaigns/{campaign['id']}").text
    assert '<b id="sent">2</b>' in page and '<b id="delivered">1</b>' in page


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        ({"signed": False}, "missing"),
        ({"secret": "not-the-secret"}, "wrong"),
        ({"skew_s": -600}, "stale"),  # a replay from ten minutes ago
        ({"skew_s": 600}, "future"),
    ],
)
def test_an_unsigned_wrongly_signed_or_stale_receipt_is_refused(
    app: Flask, kwargs: dict[str, Any], why: str
) -> None:
    populate(app, 1, phones=True)
    _, ids = queued(app, "sms", "sms-refused")
    before = outbox_size(app)
    answer = post(app, {"id": ids["P00000"], "status": "delivered"}, **kwargs)
    assert answer.status_code == 401, why
    assert SIGNATURE_HEADER in answer.json["error"]["message"]
    assert outbox_size(app) == before


def test_a_signature_header_of_any_shape_is_a_401_never_a_500(app: Flask) -> None:
    for header in (
        "t=" + "9" * 400 + ",v1=aa",
        "t=-1,v1=",
        "v1=aa,t=1,t=2",
        "ß=\u00e9",
        "x" * 4000,
    ):
        answer = app.test_client().post(
            PATH, json={"id": "x", "status": "delivered"}, headers={SIGNATURE_HEADER: header}
        )
        assert answer.status_code == 401, (header[:40], answer.status_code)


def test_a_dispatch_not_recorded_as_sent_gets_a_409_to_retry_later(app: Flask) -> None:
    populate(app, 1, phones=True)
    _, ids = queued(app, "sms", "sms-sending", status="sending")  # the answer not in yet
    before = outbox_size(app)
    answer = post(app, {"id": ids["P00000"], "status": "delivered"})
    assert answer.status_code == 409 and "retry later" in answer.json["error"]["message"]
    assert outbox_size(app) == before
    with state_of(app).sessions.begin() as session:
        session.execute(update(Delivery).values(status="sent"))
    assert post(app, {"id": ids["P00000"], "status": "delivered"}).json["recorded"] == "delivered"


@pytest.mark.parametrize("ended", ["failed", "bounced", "suppressed"])
def test_a_dispatch_that_ended_unsent_takes_nothing_and_asks_for_no_retry(
    app: Flask, ended: str
) -> None:
    populate(app, 1, phones=True)
    _, ids = queued(app, "sms", f"sms-{ended}", status=ended)
    before = outbox_size(app)
    answer = post(app, {"id": ids["P00000"], "status": "delivered"})
    assert (answer.status_code, answer.json["recorded"]) == (200, None)
    assert outbox_size(app) == before


def test_a_read_counts_as_an_open_only_on_whatsapp(app: Flask) -> None:
    populate(app, 1, phones=True, tracked=lambda i: True)
    _, ids = queued(app, "sms", "sms-read")
    assert post(app, {"id": ids["P00000"], "status": "read"}).json["recorded"] is None


def test_what_the_body_gets_wrong_is_named(app: Flask) -> None:
    populate(app, 1, phones=True)
    _, ids = queued(app, "sms", "sms-bad")
    before = outbox_size(app)
    bad_status = post(app, {"id": ids["P00000"], "status": "exploded"})
    assert bad_status.status_code == 422 and "status" in bad_status.json["error"]["fields"]
    prose = post(app, {"id": ids["P00000"], "status": "failed", "code": "no such +33612000000"})
    assert prose.status_code == 422 and "code" in prose.json["error"]["fields"]
    newline = post(app, {"id": ids["P00000"], "status": "failed", "code": "30003\n"})
    assert newline.status_code == 422 and "code" in newline.json["error"]["fields"]
    extra = post(app, {"id": ids["P00000"], "status": "delivered", "to": "+33612000000"})
    assert extra.status_code == 422 and "to" in extra.json["error"]["fields"]
    unknown = post(app, {"id": "no-such-dispatch", "status": "delivered"})
    assert unknown.status_code == 404 and "no-such-dispatch" in unknown.json["error"]["message"]
    assert outbox_size(app) == before


def test_an_email_dispatch_takes_no_receipt(app: Flask) -> None:
    populate(app, 1)
    _, ids = queued(app, "email", "mail")
    answer = post(app, {"id": ids["P00000"], "status": "delivered"})
    assert answer.status_code == 409 and "email" in answer.json["error"]["fields"]["id"][0]


def test_without_a_webhook_secret_receipts_are_refused(database_url: str) -> None:
    app = create_app(RetargetingConfig(database_url=database_url, tokens=TOKENS))
    init_db(state_of(app).engine)
    answer = post(app, {"id": "anything", "status": "delivered"}, secret="")
    assert answer.status_code == 403
    assert "RETARGETING_WEBHOOK_SECRET" in answer.json["error"]["message"]


def test_guessing_signatures_is_throttled_like_tokens(app: Flask) -> None:
    answers = [
        post(app, {"id": "x", "status": "delivered"}, secret=f"guess-{i}").status_code
        for i in range(11)
    ]
    assert answers == [401] * 10 + [429]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "id": st.text(max_size=140) | JSON,
        "status": st.sampled_from(["delivered", "read", "failed", "DELIVERED", ""]) | JSON,
        "code": st.from_regex(r"[A-Za-z0-9_.\-+ \n]{0,40}", fullmatch=True) | JSON,
    },
)


def test_a_signed_body_of_any_shape_gets_a_json_answer_never_a_500(app: Flask) -> None:
    """A bridge holding the secret can still send anything (a bug, or a compromise)."""
    populate(app, 1, phones=True)
    _, ids = queued(app, "whatsapp", "whatsapp-fuzz")
    real = st.fixed_dictionaries(
        {"id": st.just(ids["P00000"]), "status": st.sampled_from(sorted(RECEIPT_STATUSES))}
    )

    @settings(max_examples=150, deadline=None, database=None)
    @given(real | FIELDS | JSON)
    def check(body: Any) -> None:
        answer = post(app, body)
        # 400: not strict JSON (NaN); 404, 409, 422: as the other tests say.
        assert answer.status_code in (200, 400, 404, 409, 422), (body, answer.status_code)
        assert answer.is_json and ("error" in answer.json or "recorded" in answer.json)

    check()

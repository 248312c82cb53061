"""Shared set-up for the campaign delivery tests: a population with mixed consent and
suppression, a campaign run through the real API and scheduler pass, its dispatches
relayed to the real broker, and the dispatcher's consumer in a thread."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import Flask
from sqlalchemy import insert

from services.member_retargeting.config import RetargetingConfig
from services.member_retargeting.delivery.dispatcher import make_runner
from services.member_retargeting.model.suppression import EMAIL, suppression_key
from services.member_retargeting.models import (
    Consent,
    Contact,
    ContactIdentity,
    Suppression,
    outbox,
)
from services.member_retargeting.state import STATE as RETARGETING_STATE
from shared.config import KafkaConfig
from shared.db import utcnow
from shared.kafka import make_producer
from shared.outbox import OutboxRelay
from tests.unit.member_retargeting.conftest import MARKETING, work_runs


def email_of(i: int) -> str:
    return f"p{i}@example.com"


def populate(
    app: Flask,
    people: int,
    *,
    no_consent: range = range(0),
    suppressed: range = range(0),
    tracked: Any = lambda i: False,
    phones: bool = False,
) -> None:
    """``people`` contacts P00000…; ``no_consent`` denied marketing, ``suppressed`` on the
    suppression list, ``tracked(i)`` allowed analytics."""
    now = utcnow()
    engine = app.extensions[RETARGETING_STATE].engine
    with engine.begin() as conn:
        conn.execute(
            insert(Contact),
            [
                {
                    "lead_id": f"P{i:05}",
                    "stage": "lead",
                    "score": 0,
                    "email": email_of(i),
                    "email_key": suppression_key(EMAIL, email_of(i)),
                    "phone": f"+336{12000000 + i:08}" if phones else None,  # valid French mobiles
                    "phone_key": f"phone-{i}" if phones else None,
                    "first_name": f"Person{i}",
                    "user_id": f"u{i}",
                    "traits": {},
                    "intent": {},
                    "is_member": False,
                    "orders_count": 0,
                    "revenue_total": 0,
                    "updated_at": now,
                }
                for i in range(people)
            ],
        )
        conn.execute(
            insert(ContactIdentity),
            [{"kind": "user_id", "value": f"u{i}", "lead_id": f"P{i:05}"} for i in range(people)],
        )
        decisions = [
            {
                "kind": "user_id",
                "value": f"u{i}",
                "purpose": "marketing",
                "granted": i not in no_consent,
                "at": now,
                "event_id": f"m{i}",
            }
            for i in range(people)
        ] + [
            {
                "kind": "user_id",
                "value": f"u{i}",
                "purpose": "analytics",
                "granted": True,
                "at": now,
                "event_id": f"a{i}",
            }
            for i in range(people)
            if tracked(i)
        ]
        conn.execute(insert(Consent), decisions)
        if len(suppressed):
            conn.execute(
                insert(Suppression),
                [
                    {
                        "value_hash": suppression_key(EMAIL, email_of(i)),
                        "kind": "email",
                        "reason": "complained",
                        "created_by": "test",
                        "created_at": now,
                    }
                    for i in suppressed
                ],
            )


def run_campaign(app: Flask, name: str, body: str, channel: str = "email") -> dict[str, Any]:
    """A campaign to everyone, triggered through the API and worked by the scheduler."""
    client = app.test_client()
    campaign = client.post(
        "/campaigns",
        headers=MARKETING,
        json={
            "name": name,
            "channel": channel,
            "segment": {"all": []},
            "message": {"subject": "Hello {{ first_name }}", "body": body},
        },
    )
    assert campaign.status_code == 201, campaign.json
    run = client.post(
        f"/campaigns/{campaign.json['id']}/runs",
        headers=MARKETING,
        json={"idempotency_key": f"launch-{name}"},
    )
    assert run.status_code in (200, 201, 202), run.json
    work_runs(app)
    return dict(campaign.json)


def relay(app: Flask, kafka: KafkaConfig) -> int:
    """Publish member-retargeting's outbox (its dispatches) to the broker."""
    engine = app.extensions[RETARGETING_STATE].engine
    relay = OutboxRelay(engine, outbox, lambda: make_producer(kafka, "test-relay"))
    try:
        return relay.publish_pending()
    finally:
        relay.close()


@contextmanager
def dispatcher_consumer(config: RetargetingConfig) -> Iterator[None]:
    """The dispatcher's consumer loop (dispatch topic → its store, and its outbox relayed)
    in a thread, as its process runs it."""
    runner = make_runner(config)
    thread = threading.Thread(target=runner.run, kwargs={"max_seconds": 300}, daemon=True)
    thread.start()
    try:
        yield
    finally:
        runner.request_stop()
        thread.join(timeout=30)

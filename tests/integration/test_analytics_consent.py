"""Consent at the door: 1,000 people with mixed analytics consent send identifies, pages
and tracks full of personal data (ids, e-mail and name traits, IP, user agent, device
ids, e-mail in page URLs and properties). Every event is accepted for delivery, and not
one personal field of anyone who denied analytics leaves intake: what the relay would
publish (the outbox) is searched for each of their identifiers and fields. People who
granted or said nothing keep theirs (the control). SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import random
from typing import Any

from sqlalchemy import select

from services.traffic_intake.app import create_app, init_db
from services.traffic_intake.config import IntakeConfig
from services.traffic_intake.models import outbox
from services.traffic_intake.state import STATE
from shared.events import decode

WRITE_KEY = "wk-consent"
PEOPLE = 1000


def _calls(i: int, decision: bool | None) -> list[dict[str, Any]]:
    who = {"userId": f"user-{i:04}", "anonymousId": f"anon-{i:04}"}
    email = f"person{i:04}@example.com"
    context: dict[str, Any] = {
        "ip": f"10.1.{i // 250}.{i % 250}",
        "userAgent": f"Browser/{i}",
        "device": {"id": f"device-{i:04}", "advertisingId": f"ad-{i:04}"},
        "traits": {"email": email},
        "page": {"url": f"https://shop.example/p?email={email}", "path": "/p"},
    }
    if decision is not None:
        context["consent"] = {"categoryPreferences": {"analytics": decision}}
    return [
        {
            "type": "identify",
            **who,
            "traits": {"email": email, "name": f"Name-{i:04}"},
            "context": context,
        },
        {"type": "page", **who, "name": "Pricing", "context": context},
        {
            "type": "track",
            **who,
            "event": "Form Submitted",
            "properties": {"email": email, "plan": "pro"},
            "context": context,
        },
    ]


def test_no_personal_field_of_an_analytics_denier_leaves_intake(database_url: str) -> None:
    app = create_app(
        IntakeConfig(database_url=database_url, write_keys=(WRITE_KEY,), rate_limit_per_second=0)
    )
    init_db(app.extensions[STATE].engine)
    client = app.test_client()
    auth = {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}
    rng = random.Random(1129)
    decisions = {i: rng.choice([True, False, None]) for i in range(PEOPLE)}
    calls = [call for i in range(PEOPLE) for call in _calls(i, decisions[i])]
    for start in range(0, len(calls), 300):
        response = client.post(
            "/v1/batch", headers=auth, json={"batch": calls[start : start + 300]}
        )
        assert response.status_code == 200 and response.json["accepted"] == len(
            calls[start : start + 300]
        ), response.json
    with app.extensions[STATE].engine.connect() as conn:
        published = [bytes(v) for v in conn.scalars(select(outbox.c.value))]
    assert len(published) == 3 * PEOPLE  # every event still goes out
    text = b"\n".join(published).decode()
    deniers = [i for i, d in decisions.items() if d is False]
    keepers = [i for i, d in decisions.items() if d is not False]
    assert 250 < len(deniers) < 420
    for i in deniers:
        for value in (
            f"user-{i:04}",
            f"anon-{i:04}",
            f"person{i:04}@example.com",
            f"Name-{i:04}",
            f'10.1.{i // 250}.{i % 250}"',
            f'Browser/{i}"',
            f"device-{i:04}",
            f"ad-{i:04}",
        ):
            assert value not in text, (i, value)
    for i in keepers[:50]:  # the control: consent granted or not stated, data kept
        assert f"person{i:04}@example.com" in text and f"user-{i:04}" in text
    stripped = [decode(v) for v in published if b'"analytics":false' in v]
    assert len(stripped) == 3 * len(deniers)
    assert all(e.user_id is None and e.anonymous_id for e in stripped)
    assert {e.context["page"]["url"] for e in stripped if "page" in e.context} == {
        "https://shop.example/p"
    }

"""Consent honoured at every send and every export: 1,000 people with mixed, changing
consent (Segment's ``context.consent.categoryPreferences``, identify traits, an
unsubscribe, decisions on the anonymous id before sign-in, a grant and a denial at the
same instant) fed through the real consumer handlers; an e-mail campaign, an ads
campaign and a hashed export then reach exactly the people whose latest decision grants
the purpose — not one more. SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import random
from datetime import timedelta
from typing import Any

from flask import Flask

from shared.consent import ADVERTISING, MARKETING
from shared.db import utcnow
from shared.events import new_event
from shared.topics import DISPATCH, TRAFFIC
from tests.unit.member_retargeting.conftest import (
    MARKETING as MARKETING_AUTH,
)
from tests.unit.member_retargeting.conftest import (
    app,  # noqa: F401 - the fixture
    feed,
    published,
    stage,
    work_runs,
)

PEOPLE = 1000


def decision_events(rng: random.Random) -> tuple[list[Any], dict[str, dict[str, bool]]]:
    """The traffic, and each person's expected latest decision per purpose."""
    start = utcnow() - timedelta(days=30)
    events: list[Any] = []
    expected: dict[str, dict[str, bool]] = {}
    for i in range(PEOPLE):
        user, anon = f"u{i}", f"a{i}"
        latest: dict[str, tuple[Any, bool]] = {}
        for step in range(rng.randint(0, 4)):
            at = start + timedelta(days=step, minutes=i)
            purpose = rng.choice([MARKETING, ADVERTISING])
            granted = rng.random() < 0.6
            ids: dict[str, str] = rng.choice([{"user_id": user}, {"anonymous_id": anon}])
            how = rng.choice(["context", "traits", "unsubscribe", "tie"])
            if how == "unsubscribe":
                purpose, granted = MARKETING, False
                events.append(
                    new_event(
                        "identify",
                        {"traits": {"unsubscribed": True}},
                        source="w",
                        occurred_at=at,
                        **ids,
                    )
                )
            elif how == "traits":
                events.append(
                    new_event(
                        "identify",
                        {"traits": {"consent": {purpose: granted}}},
                        source="w",
                        occurred_at=at,
                        **ids,
                    )
                )
            else:
                context = {"consent": {"categoryPreferences": {purpose: granted}}}
                events.append(
                    new_event(
                        "page",
                        {"properties": {}},
                        source="w",
                        occurred_at=at,
                        context=context,
                        **ids,
                    )
                )
                if how == "tie":  # the other answer at the same instant: a denial wins
                    context = {"consent": {"categoryPreferences": {purpose: not granted}}}
                    events.append(
                        new_event(
                            "page",
                            {"properties": {}},
                            source="w",
                            occurred_at=at,
                            context=context,
                            **ids,
                        )
                    )
                    granted = False
            latest[purpose] = (at, granted)
        expected[f"L{i:04}"] = {p: g for p, (_, g) in latest.items()}
    return events, expected


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_no_one_without_consent_is_messaged_or_exported(app: Flask) -> None:  # noqa: F811
    rng = random.Random(20261129)
    traffic, expected = decision_events(rng)
    leads = [
        stage(f"L{i:04}", "lead", email=f"p{i}@x.co", user=f"u{i}", anon=(f"a{i}",))
        for i in range(PEOPLE)
    ]
    for start in range(0, len(leads), 500):
        feed(app, *leads[start : start + 500])
    items = [(TRAFFIC, e) for e in traffic]
    for start in range(0, len(items), 500):
        feed(app, *items[start : start + 500])
    may_message = {k for k, v in expected.items() if v.get(MARKETING)}
    may_advertise = {k for k, v in expected.items() if v.get(ADVERTISING)}
    # The generated population really is mixed.
    assert 100 < len(may_message) < 900 and 100 < len(may_advertise) < 900

    client = app.test_client()
    for body in (
        {"name": "mail", "message": {"subject": "s", "body": "b"}},
        {"name": "ads", "channel": "ads", "message": {"platform": "meta"}},
    ):
        campaign = client.post(
            "/campaigns", headers=MARKETING_AUTH, json={**body, "segment": {"all": []}}
        ).json
        client.post(
            f"/campaigns/{campaign['id']}/trigger",
            headers={**MARKETING_AUTH, "Idempotency-Key": body["name"]},
        )
    work_runs(app, passes=200)
    export = client.post(
        "/audiences/exports",
        headers=MARKETING_AUTH,
        json={"platform": "google", "rule": {"all": []}},
    )
    assert export.status_code == 201

    events = published(app, DISPATCH)
    messaged = {e.payload["contact_id"] for e in events if e.type == "campaign.dispatch"}
    assert messaged == may_message
    email_of = {f"L{i:04}": f"p{i}@x.co" for i in range(PEOPLE)}
    meta_hashes = {sha(email_of[c]) for c in may_advertise}
    batches = [e for e in events if e.type == "audience.batch"]
    by_platform: dict[str, set[str]] = {"meta": set(), "google": set()}
    for batch in batches:
        column = "EMAIL" if batch.payload["platform"] == "meta" else "Email"
        by_platform[batch.payload["platform"]] |= {r[column] for r in batch.payload["rows"]}
    assert by_platform["meta"] == meta_hashes
    assert by_platform["google"] == meta_hashes  # no gmail addresses: the same normal form
    for contact in sorted(may_advertise)[:5]:
        ledger = client.get(f"/people/{contact}/sharing", headers=MARKETING_AUTH).json["items"]
        assert {i["destination"] for i in ledger} >= {
            "meta:custom_audience",
            "google:customer_match",
        }
    for contact in sorted(set(email_of) - may_advertise - may_message)[:5]:
        assert client.get(f"/people/{contact}/sharing", headers=MARKETING_AUTH).json["items"] == []

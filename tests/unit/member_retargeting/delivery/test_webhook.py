"""Webhook signatures: a receiver can check them, and nothing else passes."""

from __future__ import annotations

import json

from services.member_retargeting.delivery.webhook import body_of, signature, verify

SECRET = "whsec-test"


def test_a_signature_verifies_for_its_body_and_secret_only() -> None:
    body = body_of(
        "d1", {"channel": "sms", "contact_id": "L1", "phone": "+15550100", "message": {}}
    )
    header = signature(SECRET, 1_700_000_000, body)
    assert verify(SECRET, header, body, now=1_700_000_010)
    assert not verify("another", header, body, now=1_700_000_010)
    assert not verify(SECRET, header, body + b" ", now=1_700_000_010)
    assert not verify(SECRET, header, body, now=1_700_000_000 + 301)  # a replay, later
    assert not verify(SECRET, header, body, now=1_700_000_000 - 301)  # from the future
    huge = "t=" + "9" * 400 + ",v1=ab"  # int() takes it; time.time() - it overflows
    for broken in ("", "t=1", "v1=ab", "t=x,v1=ab", "garbage", huge, "t=,v1=", "=,="):
        assert not verify(SECRET, broken, body, now=1_700_000_000)


def test_the_body_carries_the_dispatch_and_nothing_of_other_people() -> None:
    document = json.loads(
        body_of(
            "d1",
            {
                "channel": "whatsapp",
                "campaign_id": 3,
                "run_id": 4,
                "contact_id": "L1",
                "phone": "+15550100",
                "message": {"body": "Hi"},
                "kind": "marketing",
            },
        )
    )
    assert document == {
        "id": "d1",
        "channel": "whatsapp",
        "campaign_id": 3,
        "run_id": 4,
        "contact_id": "L1",
        "email": None,
        "phone": "+15550100",
        "message": {"body": "Hi"},
    }

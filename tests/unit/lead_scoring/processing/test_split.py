"""A split undoes a wrong merge: both leads end exactly as a replay without the linking
event leaves them (scores, every point's explanation, stages, profiles), on SQLite and
PostgreSQL; member-retargeting's contacts follow; the API and the pages ask for it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from services.lead_scoring.app import create_app, init_db
from services.lead_scoring.config import ScoringConfig
from services.lead_scoring.models import Lead, LeadEvent, LeadMerge, ScoreEntry, StageChange, outbox
from services.lead_scoring.state import STATE as SCORING_STATE
from services.member_retargeting.app import create_app as retargeting_app
from services.member_retargeting.app import init_db as retargeting_db
from services.member_retargeting.config import RetargetingConfig
from services.member_retargeting.consumer import handlers as retargeting_handlers
from services.member_retargeting.models import Contact, ContactIdentity
from services.member_retargeting.models import outbox as retargeting_outbox
from services.member_retargeting.models import processed_events as retargeting_processed
from services.member_retargeting.state import STATE as RETARGETING_STATE
from shared.events import Envelope, decode, encode
from shared.runner import BatchProcessor
from shared.topics import LEADS
from tests.helpers import FakeRecord, page_login
from tests.unit.lead_scoring.conftest import ADMIN, SALES, TOKENS, Feeder
from tests.unit.lead_scoring.processing.test_identity import Clock, identify, page, track


def script() -> tuple[list[Envelope], Envelope]:
    """Ada on her laptop becomes an MQL; Bob browses on his; a colleague types Ada's
    e-mail on Bob's laptop (the wrong link); Bob and Ada carry on."""
    clock = Clock()
    before = [
        page(clock, anonymous_id="ada-laptop"),
        identify(clock, "ada@x.co", user_id="ada", anonymous_id="ada-laptop"),
        track(clock, "Form Submitted", user_id="ada"),
        *(page(clock, anonymous_id="bob-laptop") for _ in range(3)),
        track(clock, "Product Added", anonymous_id="bob-laptop"),
    ]
    wrong = identify(clock, "ada@x.co", anonymous_id="bob-laptop")
    after = [
        page(clock, anonymous_id="bob-laptop"),
        track(clock, "Signed Up", anonymous_id="bob-laptop"),
        page(clock, user_id="ada"),
    ]
    return [*before, wrong, *after], wrong


def _app(url: str) -> Flask:
    app = create_app(ScoringConfig(database_url=url, tokens=TOKENS))
    init_db(app.extensions[SCORING_STATE].engine)
    return app


def picture(app: Flask, lead_id: str) -> dict[str, Any]:
    """A lead as sales sees it: everything but ids and times of processing."""
    with app.extensions[SCORING_STATE].sessions() as s:
        lead = s.get(Lead, lead_id)
        assert lead is not None
        points = s.execute(
            select(ScoreEntry.rule_id, ScoreEntry.points, ScoreEntry.reason, ScoreEntry.event_id)
            .where(ScoreEntry.lead_id == lead_id)
            .order_by(ScoreEntry.occurred_at, ScoreEntry.rule_id)
        ).all()
        stages = s.execute(
            select(StageChange.from_stage, StageChange.to_stage)
            .where(StageChange.lead_id == lead_id, StageChange.changed_by == "system")
            .order_by(StageChange.id)
        ).all()
        counted = s.scalars(
            select(LeadEvent.event_id)
            .where(LeadEvent.lead_id == lead_id, LeadEvent.excluded.is_(None))
            .order_by(LeadEvent.occurred_at)
        ).all()
        return {
            "stage": lead.stage,
            "score": lead.score,
            "email": lead.email,
            "user_id": lead.user_id,
            "traits": lead.traits,
            "fit": (lead.fit_grade, lead.fit_score),
            "intent": lead.intent,
            "engagement": round(lead.engagement_raw, 6),
            "points": [tuple(p) for p in points],
            "stages": [tuple(x) for x in stages],
            "events": list(counted),
        }


def lead_of(app: Flask, anonymous_id: str) -> str:
    from services.lead_scoring.models import Identity

    with app.extensions[SCORING_STATE].sessions() as s:
        owner = s.scalar(
            select(Identity.lead_id).where(
                Identity.kind == "anonymous_id", Identity.value == anonymous_id
            )
        )
        assert owner is not None
        return owner


def test_a_split_restores_both_leads_as_if_the_merge_never_happened(
    database_url: str, tmp_path: Path
) -> None:
    events, wrong = script()
    replay = _app(f"sqlite:///{tmp_path / 'replay.db'}")
    Feeder(replay)(*[e for e in events if e is not wrong])
    merged = _app(database_url)
    feed = Feeder(merged)
    outgoing = []
    for e in events:
        outgoing += feed(e).outgoing
    ada = lead_of(merged, "ada-laptop")
    assert lead_of(merged, "bob-laptop") == ada  # the wrong merge happened
    with merged.extensions[SCORING_STATE].sessions() as s:
        [merge] = s.scalars(select(LeadMerge))
    assert merge.reason == "identify from web (server source) linked anonymous_id=bob-laptop"

    client = merged.test_client()
    response = client.post(
        f"/leads/{ada}/split",
        headers=SALES,
        json={"merge_id": merge.id, "reason": "a colleague typed Ada's e-mail"},
    )
    assert response.status_code == 200, response.json
    assert response.json["merges"][0]["split_reason"].endswith("a colleague typed Ada's e-mail")
    bob = lead_of(merged, "bob-laptop")
    assert bob == merge.merged_lead_id  # Bob's lead is back, under its own id

    for anonymous_id in ("ada-laptop", "bob-laptop"):
        expected = picture(replay, lead_of(replay, anonymous_id))
        assert picture(merged, lead_of(merged, anonymous_id)) == expected, anonymous_id
    with merged.extensions[SCORING_STATE].sessions() as s:
        aside = s.scalars(select(LeadEvent).where(LeadEvent.excluded.is_not(None))).all()
    assert [row.event_id for row in aside] == [wrong.event_id]

    # The published split carries both leads; member-retargeting's contacts follow it.
    with merged.extensions[SCORING_STATE].engine.connect() as conn:
        [split_event] = [
            decode(r.value)
            for r in conn.execute(select(outbox.c.value))
            if decode(r.value).type == "lead.split"
        ]
    assert {
        split_event.payload["lead"]["lead_id"],
        split_event.payload["split_lead"]["lead_id"],
    } == {
        ada,
        bob,
    }
    retargeting = retargeting_app(
        RetargetingConfig(database_url=f"sqlite:///{tmp_path / 'r.db'}", tokens=TOKENS)
    )
    retargeting_db(retargeting.extensions[RETARGETING_STATE].engine)
    processor = BatchProcessor(
        consumer_name="member-retargeting",
        sessions=retargeting.extensions[RETARGETING_STATE].sessions,
        handlers=retargeting_handlers(),
        processed_table=retargeting_processed,
        outbox_table=retargeting_outbox,
    )
    lead_events = [o.envelope for o in outgoing] + [split_event]
    result = processor.process(
        [FakeRecord(LEADS, 0, i, b"k", encode(e)) for i, e in enumerate(lead_events)]
    )
    assert result.dead_letters == []
    with retargeting.extensions[RETARGETING_STATE].sessions() as s:
        contact = s.get(Contact, bob)
        assert contact is not None and contact.merged_into is None
        owner = s.get(ContactIdentity, ("anonymous_id", "bob-laptop"))
        assert owner is not None and owner.lead_id == bob


def test_an_identifier_can_be_given_a_lead_of_its_own(scoring_app: Flask, feed: Feeder) -> None:
    events, _ = script()
    feed(*events)
    ada = lead_of(scoring_app, "ada-laptop")
    client = scoring_app.test_client()
    response = client.post(
        f"/leads/{ada}/split",
        headers=ADMIN,
        json={
            "identifier": {"kind": "anonymous_id", "value": "bob-laptop"},
            "reason": "Bob's laptop, not Ada's",
        },
    )
    assert response.status_code == 200, response.json
    bob = lead_of(scoring_app, "bob-laptop")
    assert bob != ada
    assert picture(scoring_app, bob)["events"][-2:] == [e.event_id for e in events[-3:-1]]
    # Split again: nothing left to separate, and errors are answered plainly.
    again = client.post(
        f"/leads/{ada}/split",
        headers=ADMIN,
        json={"identifier": {"kind": "anonymous_id", "value": "bob-laptop"}, "reason": "twice"},
    )
    assert again.status_code == 404 and "bob-laptop" in again.json["error"]["message"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"reason": "no target"}, 422),
        ({"merge_id": 1, "identifier": {"kind": "user_id", "value": "x"}, "reason": "both"}, 422),
        ({"merge_id": 999, "reason": "unknown merge"}, 404),
        ({"merge_id": 1}, 422),
    ],
)
def test_split_requests_are_checked(
    scoring_app: Flask, feed: Feeder, body: dict, status: int
) -> None:
    events, _ = script()
    feed(*events)
    ada = lead_of(scoring_app, "ada-laptop")
    client = scoring_app.test_client()
    assert client.post(f"/leads/{ada}/split", headers=SALES, json=body).status_code == status
    marketing = {"Authorization": "Bearer marketing-t"}
    assert client.post(f"/leads/{ada}/split", headers=marketing, json=body).status_code == 403


def test_the_lead_page_shows_identities_and_splits_a_merge(
    scoring_app: Flask, feed: Feeder
) -> None:
    events, _ = script()
    feed(*events)
    ada = lead_of(scoring_app, "ada-laptop")
    client = scoring_app.test_client()
    csrf = page_login(client, "sales-t")
    detail = client.get(f"/app/leads/{ada}").text
    assert (
        "bob-laptop" in detail
        and "identify from web (server source) linked anonymous_id=bob-laptop" in detail
    )
    merge_id = int(re.search(r'name="merge_id" value="(\d+)"', detail).group(1))  # type: ignore[union-attr]
    response = client.post(
        f"/app/leads/{ada}/split",
        data={"csrf": csrf, "merge_id": merge_id, "reason": "two people"},
    )
    assert response.status_code == 302
    assert lead_of(scoring_app, "bob-laptop") != ada
    assert "split by sales" in client.get(f"/app/leads/{ada}").text

"""A batch applied at once gives exactly what applying its events one by one gives.

The consumer applies a poll batch through one ``TrafficBatch`` (state read up front, rows
written in bulk at the end), and the runner falls back to one event per savepoint when an
event is bad. Both paths must agree to the point and the row, including the hard cases
inside one batch: a merge of two leads that both have unwritten rows, capped and one-time
rules, intent caps, an MQL routed to a rep, a group call changing the fit grade.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from services.lead_scoring.app import create_app, init_db
from services.lead_scoring.config import ScoringConfig
from services.lead_scoring.models import (
    Identity,
    Lead,
    LeadEvent,
    LeadMerge,
    ScoreEntry,
    StageChange,
)
from services.lead_scoring.processing.lead_events import coalesce_scored
from services.lead_scoring.state import STATE as SCORING_STATE
from shared.events import Envelope, encode, new_event
from shared.outbox import Outgoing
from tests.unit.lead_scoring.conftest import TOKENS, Feeder

START = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def _script() -> list[Envelope]:
    """Four people over two days; times are fixed so both runs score the same moments."""
    clock = iter(START + timedelta(minutes=7 * i) for i in range(1000))

    def ev(
        event_type: str, payload: dict[str, Any], at: datetime | None = None, **ids: str
    ) -> Envelope:
        return new_event(event_type, payload, source="web", occurred_at=at or next(clock), **ids)

    def page(path: str, at: datetime | None = None, **ids: str) -> Envelope:
        return ev("page", {"properties": {"path": path, "title": path.strip("/")}}, at, **ids)

    def track(name: str, **ids: str) -> Envelope:
        return ev("track", {"event": name, "properties": {}}, **ids)

    return [
        page("/pricing", anonymous_id="a1"),
        page("/docs/api", anonymous_id="a1"),
        page("/", anonymous_id="a2"),
        page("/pricing", anonymous_id="a2"),
        page("/pricing", anonymous_id="a2"),  # intent capped once a day
        ev(
            "identify",
            {"traits": {"email": "Ada@Example.com", "title": "CTO"}},
            anonymous_id="a1",
            user_id="u1",
        ),
        ev("identify", {"traits": {"email": "bob@example.com"}}, user_id="u2"),
        page("/security", user_id="u2"),
        # a2's lead and u2's lead both have rows not yet written: merged mid-batch
        ev("alias", {"previous_id": "a2"}, user_id="u2"),
        *(track("Product Added", user_id="u1") for _ in range(5)),  # 3 a day
        track("Signed Up", user_id="u1"),
        track("Signed Up", user_id="u1"),  # one-time
        track("Form Error", user_id="u1"),
        ev(
            "group",
            {"group_id": "acme", "traits": {"industry": "Software", "employees": 800}},
            user_id="u1",
        ),
        track("Form Submitted", user_id="u1"),  # → MQL, routed to the rep
        page("/pricing", user_id="u1"),  # capped: a1 had pricing intent today
        page("/pricing", START + timedelta(days=1, hours=1), user_id="u1"),  # a new day
        track("Form Submitted", user_id="u2"),
        page("/", anonymous_id="a3"),
        ev("identify", {"traits": {"email": "cy@example.com"}}, anonymous_id="a3", user_id="u3"),
        track("Order Completed", user_id="u3"),
        ev("identify", {"traits": {}}, anonymous_id="a4", user_id="u2"),  # a new id for u2
        page("/migrate", anonymous_id="a4"),
    ]


def _app(url: str) -> Flask:
    app = create_app(ScoringConfig(database_url=url, tokens=TOKENS))
    init_db(app.extensions[SCORING_STATE].engine)
    created = app.test_client().post(
        "/admin/reps",
        headers={"Authorization": f"Bearer {TOKENS.admin}"},
        json={"name": "Mei", "email": "mei@corp.example"},
    )
    assert created.status_code == 201, created.json
    return app


class Names:
    """Lead ids are random: name them by order of first appearance on the lead topic."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}

    def see(self, outgoing: list[Outgoing]) -> None:
        for o in outgoing:
            for lead_id in (o.key, o.envelope.payload.get("merged_lead_id")):
                if isinstance(lead_id, str):
                    self.names.setdefault(lead_id, f"lead-{len(self.names)}")

    def __call__(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: self(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self(v) for v in value]
        if isinstance(value, str) and len(value) == 32:
            return self.names.get(value, value)
        return value


def _published(outgoing: list[Outgoing], name: Names) -> list[tuple[Any, ...]]:
    # A merge's event id derives from the (random) id of the merged lead.
    return [
        (
            o.envelope.type,
            o.envelope.event_id if o.envelope.type != "lead.merged" else "(from lead ids)",
            name(o.key),
            name(o.envelope.payload),
        )
        for o in outgoing
    ]


def _state(app: Flask, name: Names) -> dict[str, Any]:
    with app.extensions[SCORING_STATE].sessions() as s:
        leads = s.scalars(select(Lead)).all()
        assert {lead.id for lead in leads} <= name.names.keys(), "a lead never published"
        return {
            "leads": sorted(
                (
                    name(lead.id),
                    lead.stage,
                    lead.score,
                    lead.fit_grade,
                    lead.fit_score,
                    lead.intent,
                    round(lead.engagement_raw, 6),
                    lead.email,
                    lead.user_id,
                    lead.traits,
                    lead.account_id,
                    name(lead.merged_into),
                    lead.owner_id is not None,
                    lead.last_event_at,
                )
                for lead in leads
            ),
            "identities": sorted(
                (i.kind, i.value, name(i.lead_id)) for i in s.scalars(select(Identity))
            ),
            "events": sorted(
                (name(e.lead_id), e.event_id, e.type, e.path, e.occurred_at)
                for e in s.scalars(select(LeadEvent))
            ),
            "awards": sorted(
                (name(e.lead_id), e.event_id, e.rule_id, e.points, e.occurred_at)
                for e in s.scalars(select(ScoreEntry))
            ),
            "stages": [
                (name(c.lead_id), c.from_stage, c.to_stage, c.reason, c.changed_by)
                for c in s.scalars(select(StageChange).order_by(StageChange.id))
            ],
            "merges": sorted(
                (name(m.lead_id), name(m.merged_lead_id), m.reason)
                for m in s.scalars(select(LeadMerge))
            ),
        }


def _run(
    app: Flask, batches: list[list[Envelope | bytes]], *, coalesce: bool = False
) -> tuple[Any, Any, list[Any]]:
    """Feed the batches; ``coalesce``: what they published, coalesced as one batch's
    (how a one-event-at-a-time run compares with a whole batch)."""
    feed = Feeder(app)
    outgoing: list[Outgoing] = []
    dead = []
    for batch in batches:
        result = feed(*batch)
        outgoing += result.outgoing
        dead += [(d.offset, d.reason) for d in result.dead_letters]
    if coalesce:
        outgoing = coalesce_scored(outgoing)
    name = Names()
    name.see(outgoing)
    return _published(outgoing, name), _state(app, name), dead


@pytest.mark.parametrize("poisoned", [False, True], ids=["clean", "with-poison"])
def test_one_batch_equals_one_event_at_a_time(
    database_url: str, tmp_path: Path, poisoned: bool
) -> None:
    script = _script()
    one_by_one = _run(
        _app(f"sqlite:///{tmp_path / 'reference.db'}"),
        [[e] for e in script],
        # A batch coalesces its leads' lead.scored; one retried event by event does not.
        coalesce=not poisoned,
    )
    batch: list[Envelope | bytes] = list(script)
    if poisoned:
        # Names nobody: the batch attempt fails, the runner re-applies event by event.
        batch.insert(9, new_event("page", {"properties": {}}, source="web", anonymous_id="null"))
    published, state, dead = _run(_app(database_url), [batch])

    assert published == one_by_one[0]
    assert state == one_by_one[1]
    assert dead == (
        [(9, "event names no person (no usable user_id or anonymous_id)")] if poisoned else []
    )
    # The script really exercised the hard cases.
    assert [m[2] for m in state["merges"]] == [
        "alias from web (server source) linked anonymous_id=a2"
    ]
    kinds = {p[0] for p in published}
    assert {"lead.merged", "lead.assigned", "lead.stage_changed", "lead.scored"} <= kinds
    awards = [a[2] for a in state["awards"]]
    assert awards.count("product-added") == 3 and awards.count("signed-up") == 1
    assert awards.count("intent:pricing") == 3  # a1 (u1), a2 once (capped), u1 the next day
    assert ("customer",) in {(lead[1],) for lead in state["leads"]}


def test_batches_split_anywhere_agree(database_url: str, tmp_path: Path) -> None:
    script = _script()
    whole = _run(_app(f"sqlite:///{tmp_path / 'whole.db'}"), [list(script)])
    thirds = _run(_app(database_url), [list(script[i : i + 9]) for i in range(0, len(script), 9)])
    assert thirds[1:] == whole[1:]
    # Coalesced per batch, differently: the same final snapshots and every explanation.
    assert _explained(thirds[0]) == _explained(whole[0])
    assert len([p for p in thirds[0] if p[0] == "lead.scored"]) > len(
        [p for p in whole[0] if p[0] == "lead.scored"]
    )


def _explained(published: list[Any]) -> dict[Any, Any]:
    """Per lead: its newest snapshot in a ``lead.scored``, the sum of the deltas and
    every point (in order), what a consumer of the scores ends up knowing."""
    out: dict[Any, Any] = {}
    for kind, _id, key, payload in published:
        if kind == "lead.scored":
            newest, delta, points = out.get(key, (None, 0, []))
            if newest is None or payload["lead"]["version"] > newest["version"]:
                newest = payload["lead"]
            out[key] = (newest, delta + payload["delta"], points + payload["points"])
    return out


def test_bytes_of_a_redelivered_batch_apply_nothing(tmp_path: Path) -> None:
    app = _app(f"sqlite:///{tmp_path / 'again.db'}")
    script = [encode(e) for e in _script()]
    feed = Feeder(app)
    first = feed(*script)
    again = feed(*script)
    assert first.applied == len(script)
    assert (again.applied, again.duplicates, again.outgoing) == (0, len(script), [])
